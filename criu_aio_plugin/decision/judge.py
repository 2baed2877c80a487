"""Judge a checkpoint's rings on a kernel: the estimator's answers as one ``Judgement``.

Every ring is estimated (one batched io_setup per distinct ring size when the
model is right, none for sizes confirmed earlier this boot); its status is the
estimate's (FINE, REWRITE, IMPOSSIBLE, BUDGET, ERROR). Then the AIO budget: the
sum of the chosen nr_req values, which a restore charges to fs.aio-nr, against
the headroom left once our own probes are out of the way. When that does not
fit, rings that are fine as stored are shrunk to their smallest working nr_req
(CRIU's stored values can charge up to twice what the ring needs) if, and only
if, that makes the restore fit.

Lean core: this runs on ``criu-aio swrk``'s restore path.
"""

from __future__ import annotations

from criu_aio_plugin.decision.model import Judgement, RingVerdict
from criu_aio_plugin.estimator.converge import RingRequest, estimate_many
from criu_aio_plugin.estimator.model import Knowledge, ModelStore, default_store
from criu_aio_plugin.kernel.interface import Kernel, settle_budget
from criu_aio_plugin.status import FINE, REWRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from criu_aio_plugin.estimator.types import Estimate
    from criu_aio_plugin.images.mm import ImageRing


def _verdict(ring: ImageRing, est: Estimate) -> RingVerdict:
    return RingVerdict(
        ring=ring,
        status=est.status,
        nr_req=est.nr_req if est.ok else 0,
        reason=est.reason,
        smallest_ring_len=est.smallest_ring_len,
        needed=est.needed,
        source=est.source,
    )


def judge(
    kernel: Kernel,
    rings: Sequence[ImageRing],
    checkpoint: str = "",
    *,
    store: ModelStore | None = None,
    knowledge: Knowledge | None = None,
) -> Judgement:
    """Judge every ring of a checkpoint on *kernel* (see the module docstring)."""
    store = store if store is not None else default_store(kernel)
    know = knowledge if knowledge is not None else store.load(kernel)
    requests = [RingRequest(r.ring_len, r.nr_req) for r in rings]
    probes_before = _kernel_probes(kernel)
    cold = know.model is None and not _all_confirmed(requests, know.observed)
    estimates = estimate_many(kernel, requests, know, calibrate=cold) if rings else []
    verdicts = tuple(_verdict(r, e) for r, e in zip(rings, estimates, strict=True))
    needed = _charge(verdicts)
    waited = settle_budget(kernel, needed) if rings else 0.0
    facts = kernel.facts()
    if needed > facts.aio_headroom:
        shrunk = _shrink_to_fit(kernel, verdicts, know)
        fits = _charge(shrunk)
        if fits <= facts.aio_headroom:
            verdicts, needed = shrunk, fits
    if rings:
        store.save(kernel, know)
    probes_after = _kernel_probes(kernel)
    if probes_before is not None and probes_after is not None:
        probes = probes_after - probes_before
    else:
        probes = sum(e.probes for e in estimates) + know.calibration_probes
    return Judgement(
        checkpoint=checkpoint,
        kernel=kernel.name,
        live=kernel.is_live,
        host=facts,
        rings=verdicts,
        budget_needed=needed,
        headroom=facts.aio_headroom,
        probes=probes,
        teardown_wait=waited,
    )


def _charge(verdicts: Sequence[RingVerdict]) -> int:
    return sum(v.charge for v in verdicts)


def _shrink_to_fit(
    kernel: Kernel, verdicts: tuple[RingVerdict, ...], know: Knowledge
) -> tuple[RingVerdict, ...]:
    fine = [v for v in verdicts if v.status is FINE]
    if not fine:
        return verdicts
    # Without a stored value the estimator answers the smallest working nr_req;
    # sizes are known by now, so this costs no probe when the model is right.
    smallest = estimate_many(
        kernel, [RingRequest(v.ring.ring_len, None, smallest=True) for v in fine], know
    )
    better = {id(v): e for v, e in zip(fine, smallest, strict=True) if e.ok and e.nr_req < v.nr_req}
    return tuple(
        _verdict(v.ring, better[id(v)]).replace(status=REWRITE) if id(v) in better else v
        for v in verdicts
    )


def _kernel_probes(kernel: Kernel) -> int | None:
    count = getattr(kernel, "probes", None)
    return count if isinstance(count, int) else None


def _all_confirmed(requests: Sequence[RingRequest], observed: Mapping[int, int]) -> bool:
    return all(
        r.stored_nr_req is not None and observed.get(r.stored_nr_req) == r.ring_len
        for r in requests
    )
