"""Fleet placement against the simulated kernels, ground truth from the estimator.

For every simulated host (modern x86 with 1, 2, 16, 64, 88 and 4096 possible
CPUs, v3.10, 64 KiB pages): what ``can-restore`` says from the host's profile
document must be what ``decision.judge`` says on that host's kernel directly, and
the nodeAffinity printed for a checkpoint, deserialized with the official
kubernetes client and evaluated on the node labels made from those profiles,
must admit exactly the hosts whose plan has no impossible/budget/error ring.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient, V1NodeAffinity

from criu_aio_plugin import status as sts
from criu_aio_plugin.decision.judge import judge
from criu_aio_plugin.estimator.profile import profile_document
from criu_aio_plugin.fleet import k8s, placement, profiles
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.kernel.simulated import SimulatedKernel, modern, v3_10

KERNELS: dict[str, Callable[[], SimulatedKernel]] = {
    **{f"x86-{c}": (lambda c=c: modern(c)) for c in (1, 2, 16, 64, 88, 4096)},
    "v3.10": lambda: v3_10(),
    "arm64-64k-4": lambda: modern(4, page=65536),
    "ppc64-64k-88": lambda: modern(88, page=65536),
    "ppc64-64k-1024": lambda: modern(1024, page=65536),
}

K = 4096
CHECKPOINTS: dict[str, list[tuple[int, int | None]]] = {
    # name -> [(ring_len, stored nr_req or None for CRIU's formula)]
    "one-page": [(K, None)],
    "criu-1156": [(3 * K, None), (3 * K, None)],
    "mixed": [(K * 2, None), (K * 5, None), (K * 40, None)],
    "six-pages": [(6 * K, None), (7 * K, None)],
    "hand-edited": [(2 * K, 200), (16 * K, None)],
    "large": [(K * 300, None)],
    "one-64k": [(65536, None)],
    "two-64k": [(2 * 65536, None), (3 * 65536, None)],
    "sixteen-64k": [(16 * 65536, None)],
    "odd-16k": [(16384 * 3, None)],
    "over-budget": [(K * 600, None), (K * 600, None)],
}


def _rings(spec: list[tuple[int, int | None]]) -> list[ImageRing]:
    return [
        ImageRing(
            path=f"/ckpt/mm-{100 + i}.img",
            pid=100 + i,
            ring_id=0x7F00_0000_0000 + i * 0x1000_0000,
            nr_req=criu_formula(length) if stored is None else stored,
            ring_len=length,
        )
        for i, (length, stored) in enumerate(spec)
    ]


def _profile_doc(name: str) -> dict[str, Any]:
    kernel = KERNELS[name]()
    try:
        return profile_document(kernel)
    finally:
        kernel.close()


def _host_status(name: str, rings: list[ImageRing]) -> sts.Status:
    """What the host itself decides: a judgement on a fresh kernel of that host."""
    kernel = KERNELS[name]()
    try:
        return judge(kernel, rings).status
    finally:
        kernel.close()


@pytest.mark.parametrize("checkpoint", sorted(CHECKPOINTS))
def test_profile_verdict_is_the_hosts_own(checkpoint: str) -> None:
    rings = _rings(CHECKPOINTS[checkpoint])
    hosts = [profiles.parse(json.dumps(_profile_doc(n)), f"{n}.json") for n in KERNELS]
    fleet = placement.place_all(rings, hosts, "/ckpt")
    for name, verdict in zip(KERNELS, fleet.hosts, strict=True):
        assert verdict.status is _host_status(name, rings), name


def test_checkpoints_cover_every_verdict() -> None:
    seen = {_host_status(n, _rings(c)) for n in KERNELS for c in CHECKPOINTS.values()}
    assert seen == {sts.FINE, sts.REWRITE, sts.IMPOSSIBLE, sts.BUDGET}


def _affinity_model(ring_lens: list[int]) -> dict[str, Any]:
    client = ApiClient()
    printed = json.dumps(k8s.node_affinity(ring_lens), indent=2)  # what inspect prints
    model = client.deserialize(printed, "V1NodeAffinity", "application/json")
    assert isinstance(model, V1NodeAffinity)
    back: dict[str, Any] = client.sanitize_for_serialization(model)
    return back


@pytest.mark.parametrize("checkpoint", sorted(CHECKPOINTS))
def test_affinity_admits_exactly_the_hosts_that_can_restore(checkpoint: str) -> None:
    rings = _rings(CHECKPOINTS[checkpoint])
    affinity = _affinity_model([r.ring_len for r in rings])
    labels = {n: k8s.nfd_labels(k8s.node_facts_from_profile(_profile_doc(n))) for n in KERNELS}
    admitted = {n for n in KERNELS if k8s.affinity_admits(affinity, labels[n])}
    can = {n for n in KERNELS if _host_status(n, rings).restorable}
    assert admitted == can


@pytest.mark.parametrize("max_nr", [100, 127, 128, 254, 255, 1000])
def test_affinity_budget_never_turns_away_a_host_that_can(max_nr: int) -> None:
    # Tight fs.aio-max-nr: the label bound is the fewest events any nr_req choice
    # needs, a lower bound of what the estimator picks (it keeps a stored nr_req
    # that reproduces the ring even when a smaller one would fit the budget).
    tight = {f"x86-{c}@{max_nr}": (lambda c=c: modern(c).with_budget(max_nr)) for c in (1, 2, 16)}
    turned_away = 0
    for spec in ([(K, None)], [(2 * K, None), (2 * K, None)], [(3 * K, None)]):
        rings = _rings(spec)
        affinity = _affinity_model([r.ring_len for r in rings])
        for name, make in tight.items():
            kernel = make()
            doc = profile_document(kernel)
            kernel.close()
            kernel = make()
            status = judge(kernel, rings).status
            kernel.close()
            admitted = k8s.affinity_admits(
                affinity, k8s.nfd_labels(k8s.node_facts_from_profile(doc))
            )
            if status.restorable:
                assert admitted, (name, spec)
            turned_away += not admitted and status is sts.BUDGET
    # Below 127 events no 3-page ring fits anywhere: the budget expression bites.
    assert (turned_away > 0) == (max_nr < 127)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(min_value=1, max_value=64).map(lambda p: p * K),
            st.integers(min_value=1, max_value=6).map(lambda p: p * 65536),
        ),
        min_size=1,
        max_size=5,
    ),
    st.booleans(),
)
def test_affinity_equals_the_estimator_on_random_checkpoints(
    ring_lens: list[int], edited: bool
) -> None:
    # Stored nr_req: CRIU's formula, or another build's k - 2 (fixable, not fatal).
    spec: list[tuple[int, int | None]] = [
        (length, (length - 32) // 32 - 2 if edited else None) for length in ring_lens
    ]
    rings = _rings(spec)
    affinity = _affinity_model(ring_lens)
    admitted = {
        n
        for n in KERNELS
        if k8s.affinity_admits(
            affinity, k8s.nfd_labels(k8s.node_facts_from_profile(_profile_doc(n)))
        )
    }
    can = {n for n in KERNELS if _host_status(n, rings).restorable}
    assert admitted == can
