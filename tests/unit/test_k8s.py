"""NFD labels and nodeAffinity over the pure ring arithmetic.

Ground truth here is a brute force over RingArithmetic (every n that could
build each ring); the simulated-kernel tier (tests/sim/test_fleet*.py) checks
the same affinity against the estimator itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient, V1NodeAffinity, V1Pod

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.fleet import k8s
from criu_aio_plugin.kernel.arithmetic import RingArithmetic

AIO_MAX_NR = 65536

# The simulated kernels of the estimator issue, as arithmetic.
NODES: dict[str, tuple[RingArithmetic, int]] = {
    **{
        f"x86-{cpus}cpu": (RingArithmetic(possible_cpus=cpus), AIO_MAX_NR)
        for cpus in (1, 2, 16, 64, 88, 4096)
    },
    "v3.10": (RingArithmetic(doubling=False, floor_per_cpu=0, possible_cpus=4), AIO_MAX_NR),
    "arm64-64k-2cpu": (RingArithmetic(page_size=65536, possible_cpus=2), AIO_MAX_NR),
    "arm64-64k-256cpu": (RingArithmetic(page_size=65536, possible_cpus=256), AIO_MAX_NR),
    "arm64-16k-64cpu": (RingArithmetic(page_size=16384, possible_cpus=64), AIO_MAX_NR),
    "x86-2cpu-tight": (RingArithmetic(possible_cpus=2), 300),
    "x86-16cpu-tight": (RingArithmetic(possible_cpus=16), 300),
}


def _through_client(affinity: dict[str, Any]) -> dict[str, Any]:
    """Deserialize with the official client's models and serialize back."""
    client = ApiClient()
    model = client.deserialize(json.dumps(affinity), "V1NodeAffinity", "application/json")
    assert isinstance(model, V1NodeAffinity)
    back: dict[str, Any] = client.sanitize_for_serialization(model)
    return back


def _min_n(arith: RingArithmetic, ring_len: int) -> int | None:
    """The smallest n with ring_len(n) == ring_len, or None (ring_len(n) is monotonic)."""
    low, high = 1, ring_len // 32 + 1  # ring_len(high) > ring_len: more slots than bytes/32
    while low < high:
        mid = (low + high) // 2
        if arith.ring_len(mid) >= ring_len:
            high = mid
        else:
            low = mid + 1
    return low if arith.ring_len(low) == ring_len else None


def _can_restore(arith: RingArithmetic, aio_max_nr: int, ring_lens: list[int]) -> bool:
    needed = [_min_n(arith, ring_len) for ring_len in ring_lens]
    if any(n is None for n in needed):
        return False
    return sum(n for n in needed if n is not None) <= aio_max_nr


def _labels(name: str) -> dict[str, str]:
    arith, max_nr = NODES[name]
    return k8s.nfd_labels(k8s.node_facts_from_arithmetic(arith, aio_max_nr=max_nr))


def _admitted(ring_lens: list[int]) -> set[str]:
    affinity = _through_client(k8s.node_affinity(ring_lens))
    return {name for name in NODES if k8s.affinity_admits(affinity, _labels(name))}


CASES = [
    # (ring lengths, nodes that must be admitted)
    ([4096], {"x86-1cpu", "x86-2cpu", "v3.10", "x86-2cpu-tight"}),
    (
        [8192, 4096 * 3],
        {"x86-1cpu", "x86-2cpu", "x86-16cpu", "v3.10", "x86-2cpu-tight", "x86-16cpu-tight"},
    ),
    # 20 KiB: no 16K-page node; 5 pages is the 64-CPU floor.
    ([4096 * 16, 4096 * 5], {"x86-1cpu", "x86-2cpu", "x86-16cpu", "x86-64cpu", "v3.10"}),
    (
        [65536 * 2],
        {
            *(f"x86-{c}cpu" for c in (1, 2, 16, 64, 88)),
            "v3.10",
            "arm64-64k-2cpu",
            "arm64-64k-256cpu",
            "arm64-16k-64cpu",
        },
    ),
    # 3 pages (criu#1156's old_nr=0x17f): no host with 48 or more possible CPUs.
    (
        [4096 * 3],
        {"x86-1cpu", "x86-2cpu", "x86-16cpu", "v3.10", "x86-2cpu-tight", "x86-16cpu-tight"},
    ),
]


@pytest.mark.parametrize(("ring_lens", "expected"), CASES)
def test_affinity_admits_the_expected_nodes(ring_lens: list[int], expected: set[str]) -> None:
    assert _admitted(ring_lens) == expected
    truth = {n for n, (a, m) in NODES.items() if _can_restore(a, m, ring_lens)}
    assert truth == expected


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from([4096, 16384, 65536]).flatmap(
            lambda page: st.integers(min_value=1, max_value=24).map(lambda p: p * page)
        ),
        min_size=1,
        max_size=5,
    )
)
def test_affinity_matches_brute_force(ring_lens: list[int]) -> None:
    truth = {n for n, (a, m) in NODES.items() if _can_restore(a, m, ring_lens)}
    admitted = _admitted(ring_lens)
    assert truth <= admitted  # never turns away a node that can restore
    # Exact on doubling kernels; on v3.10 the budget term is a lower bound.
    assert {n for n in admitted - truth if NODES[n][0].doubling} == set()


def test_budget_expression_excludes_tight_nodes() -> None:
    # 2-page rings need n >= 63 each where 2 pages is not the smallest ring.
    rings = [8192] * 5
    assert _min_n(NODES["x86-2cpu"][0], 8192) == 63
    assert _min_n(NODES["x86-16cpu"][0], 8192) == 1
    admitted = _admitted(rings)
    assert "x86-2cpu-tight" not in admitted  # 5 * 63 > 300
    assert "x86-16cpu-tight" in admitted  # 5 * 1: the per-CPU floor builds them
    assert {"x86-2cpu", "x86-16cpu"} <= admitted


def test_gt_lt_values_are_single_integer_strings() -> None:
    affinity = k8s.node_affinity([4096 * 3, 4096 * 7])
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"][0]["values"] for t in terms] == [["4096"], ["4096"]]
    for term in terms:
        for expression in term["matchExpressions"]:
            if expression["operator"] in ("Gt", "Lt"):
                (value,) = expression["values"]
                assert str(int(value)) == value
    # Smallest ring exactly 3 pages, or fewer: both strict, both integers.
    assert terms[0]["matchExpressions"][1:3] == [
        {"key": k8s.LABEL_MIN_RING_PAGES, "operator": "Gt", "values": ["2"]},
        {"key": k8s.LABEL_MIN_RING_PAGES, "operator": "Lt", "values": ["4"]},
    ]
    assert terms[1]["matchExpressions"][1] == {
        "key": k8s.LABEL_MIN_RING_PAGES,
        "operator": "Lt",
        "values": ["3"],
    }


def test_affinity_fits_a_pod_spec() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restored"},
        "spec": {
            "affinity": {"nodeAffinity": k8s.node_affinity([8192])},
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
        },
    }
    model = ApiClient().deserialize(json.dumps(pod), "V1Pod", "application/json")
    assert isinstance(model, V1Pod)
    terms = model.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    keys = {e.key for t in terms.node_selector_terms for e in t.match_expressions}
    assert keys == {k8s.LABEL_PAGE_SIZE, k8s.LABEL_MIN_RING_PAGES, k8s.LABEL_AIO_MAX_NR}


def test_no_rings_no_constraint() -> None:
    assert k8s.node_affinity([]) == {}
    assert k8s.affinity_admits({}, {})


def test_rings_no_page_size_divides_are_refused() -> None:
    with pytest.raises(ClientError, match="no page size"):
        k8s.node_affinity([4096 + 2048])


def test_unlabelled_node_is_not_admitted() -> None:
    affinity = k8s.node_affinity([4096])
    assert not k8s.affinity_admits(affinity, {})
    assert not k8s.affinity_admits(affinity, {**_labels("x86-2cpu"), k8s.LABEL_MIN_RING_PAGES: "x"})


@pytest.mark.parametrize("name", sorted(NODES))
def test_labels_round_trip(name: str) -> None:
    arith, max_nr = NODES[name]
    facts = k8s.node_facts_from_arithmetic(arith, aio_max_nr=max_nr)
    assert k8s.parse_nfd_labels(k8s.nfd_labels(facts)) == facts
    assert facts.min_ring_len == arith.smallest_ring_len


def test_label_values_per_node() -> None:
    assert _labels("x86-16cpu")[k8s.LABEL_MIN_RING_PAGES] == "2"
    assert _labels("x86-64cpu")[k8s.LABEL_MIN_RING_PAGES] == "5"
    assert _labels("x86-4096cpu")[k8s.LABEL_MIN_RING_PAGES] == "257"
    assert _labels("x86-2cpu")[k8s.LABEL_FORMULA_OK] == "true"
    assert _labels("x86-4096cpu")[k8s.LABEL_FORMULA_OK] == "true"
    assert _labels("v3.10")[k8s.LABEL_FORMULA_OK] == "false"
    assert _labels("arm64-64k-2cpu")[k8s.LABEL_PAGE_SIZE] == "65536"


def test_feature_file_lines() -> None:
    text = k8s.nfd_feature_file(_labels("x86-2cpu"))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    parsed = dict(line.split("=", 1) for line in lines)
    assert parsed == _labels("x86-2cpu")
    assert all(key.startswith(k8s.LABEL_PREFIX) for key in parsed)


def test_missing_label_is_named() -> None:
    labels = _labels("x86-2cpu")
    del labels[k8s.LABEL_PAGE_SIZE]
    with pytest.raises(ClientError, match="page-size is missing"):
        k8s.parse_nfd_labels(labels)
