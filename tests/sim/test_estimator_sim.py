"""The estimator against every simulated kernel: exhaustive over ring sizes.

For each ring size from 1 to 4096 pages, the answer is checked against the
kernel's own arithmetic (not against the estimator's model): EXACT means the
kernel really maps a ring of that size for the returned nr_req; IMPOSSIBLE means
no nr_req does. The probe count stays within 2 + 2*ceil(log2(range)), where
range is the distance from the first guess to the boundary the search must find.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criu_aio_plugin import status
from criu_aio_plugin.estimator.converge import RingRequest, estimate, estimate_many
from criu_aio_plugin.estimator.model import Knowledge, RingModel, calibrate
from criu_aio_plugin.kernel.arithmetic import RingArithmetic, criu_formula
from criu_aio_plugin.kernel.simulated import SimulatedKernel, modern, v3_10

BIG_BUDGET = 1 << 40  # the property tests are about sizing, not the budget
PAGES = range(1, 4097)


def kernels() -> dict[str, SimulatedKernel]:
    made = {f"x86-{c}": modern(c) for c in (1, 2, 16, 64, 88, 4096)}
    made["v3.10"] = v3_10()
    made["64k-4cpu"] = modern(4, page=65536)
    made["64k-v3.10"] = v3_10(page=65536)
    made["16k-64cpu"] = modern(64, page=16384)
    for k in made.values():
        k.aio_max_nr = BIG_BUDGET
    return made


KERNELS = kernels()


def truth(a: RingArithmetic, ring_len: int) -> tuple[int, int] | None:
    """The nr_req interval giving exactly ring_len, by brute force on boundaries."""
    return RingModel(a).nr_req_range(ring_len)


def boundary(a: RingArithmetic, ring_len: int) -> int:
    """The smallest n whose ring is at least ring_len (1 when below the floor)."""
    found = RingModel(a).first_at_least(ring_len)
    return found if found is not None else RingModel(a).max_nr_req


def bound(first_guess: int, target: int) -> int:
    distance = max(2, abs(first_guess - target) + 1)
    return 2 + 2 * math.ceil(math.log2(distance))


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("with_model", [False, True], ids=["search", "model"])
def test_every_ring_size(name: str, with_model: bool) -> None:
    kernel = KERNELS[name]
    a = kernel.arithmetic
    knowledge = calibrate(kernel) if with_model else None
    if with_model:
        assert knowledge is not None and knowledge.model is not None
    for pages in PAGES:
        ring_len = pages * a.page_size
        stored = criu_formula(ring_len)
        know = (
            Knowledge(model=knowledge.model, observed=dict(knowledge.observed))
            if knowledge
            else Knowledge()
        )
        est = estimate(kernel, ring_len, stored, knowledge=know)
        span = truth(a, ring_len)
        if span is None:
            assert est.status is status.IMPOSSIBLE, (pages, est)
            if ring_len < a.smallest_ring_len:
                assert est.smallest_ring_len == a.smallest_ring_len
                assert f"{a.possible_cpus} possible CPUs" in est.reason
        else:
            assert est.ok, (pages, est)
            assert a.ring_len(est.nr_req) == ring_len
            assert span[0] <= est.nr_req <= span[1]
        if not with_model:
            target = boundary(a, ring_len)
            limit = bound(stored, target if span is None else _nearest(span, stored))
            assert est.probes <= limit, (pages, est.probes, limit)
        else:
            assert est.probes <= 2, (pages, est)


def _nearest(span: tuple[int, int], guess: int) -> int:
    return min(max(guess, span[0]), span[1])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_model_is_right_one_probe_per_distinct_size(name: str) -> None:
    kernel = dataclasses.replace(KERNELS[name], probes=0, probe_log=[])
    know = calibrate(kernel)
    page = kernel.arithmetic.page_size
    sizes = [page * p for p in (1, 2, 3, 5, 8, 13, 300, 4000)]
    requests = [RingRequest(s, criu_formula(s) + 7) for s in sizes]  # stale stored values
    requests += requests  # duplicates cost nothing more
    before = kernel.probes
    results = estimate_many(kernel, requests, know)
    spent = kernel.probes - before
    assert spent <= len(sizes)
    assert sum(r.probes for r in results) == spent
    for req, r in zip(requests, results, strict=True):
        if r.ok:
            assert kernel.arithmetic.ring_len(r.nr_req) == req.ring_len
    # Everything is now observed: asking again costs nothing.
    again = estimate_many(kernel, requests, know)
    assert kernel.probes - before == spent
    assert [r.nr_req for r in again] == [r.nr_req for r in results]


def test_stored_value_that_works_is_kept() -> None:
    kernel = modern(2)
    for pages in (1, 2, 7, 100):
        ring_len = pages * 4096
        est = estimate(kernel, ring_len, criu_formula(ring_len))
        assert est.ok
        assert est.nr_req == criu_formula(ring_len)
        assert est.source == "stored"
        assert est.probes == 1


@pytest.mark.parametrize("name", ["v3.10", "64k-v3.10", "x86-2", "x86-64"])
def test_cold_start_decides_as_a_warm_one(name: str) -> None:
    # A cold start guesses with a modern kernel's arithmetic. On a kernel
    # without doubling that guess misses a stored nr_req the kernel honours
    # (k - 2 as another CRIU build writes it); the cold run must still keep it,
    # as a warm run (model already known) does.
    kernel = KERNELS[name]
    page = kernel.arithmetic.page_size
    requests = [RingRequest(p * page, (p * page - 32) // 32 - 2) for p in (2, 3, 8)]
    requests += [RingRequest(p * page, criu_formula(p * page)) for p in (2, 5, 16)]
    cold = estimate_many(dataclasses.replace(kernel), requests, Knowledge(), calibrate=True)
    warm = estimate_many(dataclasses.replace(kernel), requests, calibrate(kernel))
    assert [(r.status, r.nr_req) for r in cold] == [(r.status, r.nr_req) for r in warm]
    for req, r in zip(requests, cold, strict=True):
        works = kernel.arithmetic.ring_len(req.stored_nr_req or 0) == req.ring_len
        exists = truth(kernel.arithmetic, req.ring_len) is not None
        want = status.FINE if works else status.REWRITE if exists else status.IMPOSSIBLE
        assert r.status is want, (req, r)


def test_rewrite_does_not_depend_on_what_this_boot_observed() -> None:
    # 447..510 all give an 8-page ring on 2 CPUs; 510 (CRIU's own nr_req) was
    # seen earlier this boot. A ring stored with another value still gets the
    # model's least n: the same answer a fresh host profile gives.
    kernel = modern(2)
    fresh = estimate(kernel, 8 * 4096, 1021, knowledge=calibrate(kernel))
    seen = calibrate(kernel)
    seen.observe(510, 8 * 4096)
    after = estimate(kernel, 8 * 4096, 1021, knowledge=seen)
    assert (fresh.status, fresh.nr_req) == (after.status, after.nr_req) == (status.REWRITE, 447)


def test_floor_verdict_names_floor_and_cpus() -> None:
    kernel = modern(64)
    know = calibrate(kernel)
    est = estimate(kernel, 4096, 62, knowledge=know)
    assert est.status is status.IMPOSSIBLE
    assert est.smallest_ring_len == 5 * 4096
    assert "64 possible CPUs" in est.reason
    assert "256 events" in est.reason
    assert est.probes == 0  # io_setup(1) was observed at calibration


def test_budget_verdict_names_the_numbers() -> None:
    kernel = modern(2).with_budget(aio_max_nr=65536, aio_nr=65536 - 100)
    est = estimate(kernel, 16 * 4096, criu_formula(16 * 4096))
    assert est.status is status.BUDGET
    assert est.needed > 100
    assert "fs.aio-max-nr=65536" in est.reason
    assert "fs.aio-nr=65436" in est.reason


def test_not_a_page_multiple_is_impossible_without_probes() -> None:
    kernel = modern(2, page=65536)
    est = estimate(kernel, 4096, 62)
    assert est.status is status.IMPOSSIBLE
    assert est.probes == 0
    assert "65536-byte pages" in est.reason


def test_other_errno_is_error() -> None:
    class Broken(SimulatedKernel):
        def probe(self, nr_req: int):  # type: ignore[no-untyped-def]
            from criu_aio_plugin.kernel.interface import RingProbe

            return RingProbe(nr_req=nr_req, errno=38)

    est = estimate(Broken(), 4096, 62)
    assert est.status is status.ERROR
    assert "ENOSYS" in est.reason


@settings(max_examples=300, deadline=None)
@given(
    cpus=st.integers(1, 8192),
    doubling=st.booleans(),
    floor_per_cpu=st.sampled_from([0, 1, 4, 8]),
    page=st.sampled_from([4096, 16384, 65536]),
    pages=st.integers(1, 4096),
    stored_delta=st.integers(-1000, 1000),
)
def test_any_kernel_any_ring(
    cpus: int, doubling: bool, floor_per_cpu: int, page: int, pages: int, stored_delta: int
) -> None:
    """Random kernels and stale stored values: verdicts always match the arithmetic."""
    arith = RingArithmetic(
        page_size=page, doubling=doubling, possible_cpus=cpus, floor_per_cpu=floor_per_cpu
    )
    kernel = SimulatedKernel(arithmetic=arith, aio_max_nr=BIG_BUDGET)
    ring_len = pages * page
    stored = max(1, criu_formula(ring_len) + stored_delta)
    est = estimate(kernel, ring_len, stored)
    span = truth(arith, ring_len)
    if span is None:
        assert est.status is status.IMPOSSIBLE, est
    else:
        assert est.ok, est
        assert arith.ring_len(est.nr_req) == ring_len
        assert est.probes <= bound(stored, _nearest(span, stored))
    assert est.probes == kernel.probes
