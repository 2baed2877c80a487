"""A checkpoint's rings judged on one kernel: what to rewrite, what cannot work.

``plan_rings`` estimates every ring (one batched io_setup per distinct ring size
when the model is right, none for sizes confirmed earlier this boot), decides
per ring (``fine``: CRIU's stored nr_req already reproduces it; ``rewrite``:
another nr_req does; ``impossible``; ``budget``; ``error``), and checks that the
sum of the chosen nr_req values, which a restore charges to fs.aio-nr, fits the
headroom left once our own probes are out of the way.
"""

from __future__ import annotations

from criu_aio_plugin.estimator.converge import RingRequest, estimate_many
from criu_aio_plugin.estimator.model import Knowledge, ModelStore, default_store
from criu_aio_plugin.estimator.types import Estimate, Verdict
from criu_aio_plugin.kernel.interface import Kernel, settle_budget
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from criu_aio_plugin.images.mm import ImageRing

FINE = "fine"
REWRITE = "rewrite"
IMPOSSIBLE = "impossible"
BUDGET = "budget"
ERROR = "error"
# Worst first: the plan's overall status is the worst of its rings' (and budget's).
STATUS_ORDER = (ERROR, IMPOSSIBLE, BUDGET, REWRITE, FINE)


class RingDecision(Value):
    """One ring, its estimate on this kernel, and what to do with it (a frozen value)."""

    ring: ImageRing
    estimate: Estimate
    status: str

    @property
    def new_nr_req(self) -> int:
        return self.estimate.nr_req

    @property
    def message(self) -> str:
        """A sentence naming the file, the ring, its sizes and the host fact."""
        r = self.ring
        head = f"{r.file}: ring {r.ring_id:#x} ({r.ring_len} bytes, nr_req {r.nr_req})"
        if self.status == FINE:
            return f"{head}: CRIU's nr_req reproduces it"
        if self.status == REWRITE:
            return f"{head}: nr_req {self.estimate.nr_req} reproduces it here"
        return f"{head}: {self.estimate.reason or self.status}"


class RestorePlan(Value):
    """Every ring's decision plus the AIO budget the restore needs vs has (frozen)."""

    kernel_name: str
    kernel_is_live: bool
    decisions: tuple[RingDecision, ...]
    budget_needed: int
    headroom: int
    aio_max_nr: int
    aio_nr: int
    probes: int = 0
    teardown_wait: float = 0.0

    @property
    def budget_ok(self) -> bool:
        return self.budget_needed <= self.headroom

    @property
    def status(self) -> str:
        found = {d.status for d in self.decisions}
        if not self.budget_ok:
            found.add(BUDGET)
        for status in STATUS_ORDER:
            if status in found:
                return status
        return FINE

    @property
    def rewrites(self) -> dict[tuple[str, int], int]:
        """(mm image file name, ring id) -> new nr_req, the key ``apply_fix`` takes."""
        return {
            (d.ring.file, d.ring.ring_id): d.estimate.nr_req
            for d in self.decisions
            if d.status == REWRITE
        }

    def problems(self) -> list[str]:
        msgs = [d.message for d in self.decisions if d.status not in (FINE, REWRITE)]
        if not self.budget_ok:
            msgs.append(self.budget_message)
        return msgs

    @property
    def budget_message(self) -> str:
        return (
            f"the checkpoint's rings need {self.budget_needed} AIO events (sum of nr_req) "
            f"but fs.aio-max-nr={self.aio_max_nr} with fs.aio-nr={self.aio_nr} in use "
            f"leaves {self.headroom}: raise fs.aio-max-nr to at least "
            f"{self.aio_nr + self.budget_needed} or wait for AIO users to finish"
        )

    @property
    def summary(self) -> str:
        """One line for logs and cr_errmsg: the first problem, or the counts."""
        problems = self.problems()
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            return f"{problems[0]} [on {self.kernel_name}]{more}"
        counts = {s: sum(1 for d in self.decisions if d.status == s) for s in (FINE, REWRITE)}
        return (
            f"{len(self.decisions)} AIO ring(s) on {self.kernel_name}: {counts[FINE]} fine, "
            f"{counts[REWRITE]} to rewrite; {self.budget_needed} of {self.headroom} "
            "fs.aio-nr headroom needed"
        )


def _status(ring: ImageRing, est: Estimate) -> str:
    if est.verdict is Verdict.EXACT:
        return FINE if est.nr_req == ring.nr_req else REWRITE
    return {
        Verdict.IMPOSSIBLE: IMPOSSIBLE,
        Verdict.BUDGET: BUDGET,
        Verdict.ERROR: ERROR,
    }[est.verdict]


def plan_rings(
    kernel: Kernel,
    rings: Sequence[ImageRing],
    store: ModelStore | None = None,
    knowledge: Knowledge | None = None,
) -> RestorePlan:
    """Judge every ring of a checkpoint on *kernel* (see the module docstring)."""
    store = store if store is not None else default_store(kernel)
    know = knowledge if knowledge is not None else store.load(kernel)
    requests = [RingRequest(r.ring_len, r.nr_req) for r in rings]
    probes_before = _kernel_probes(kernel)
    cold = know.model is None and not _all_confirmed(requests, know.observed)
    estimates = estimate_many(kernel, requests, know, calibrate=cold)
    decisions = tuple(
        RingDecision(ring=r, estimate=e, status=_status(r, e))
        for r, e in zip(rings, estimates, strict=True)
    )
    needed = _events_needed(decisions)
    waited = settle_budget(kernel, needed)
    facts = kernel.facts()
    if needed > facts.aio_headroom:
        # CRIU's stored values can charge fs.aio-nr twice what the ring needs
        # (every nr_req from the smallest that reproduces a ring up to the
        # largest gives the same ring): when the budget is tight, shrink the
        # rings that are "fine" as stored to their smallest working nr_req.
        # Only worth a rewrite when it makes the restore fit.
        shrunk = _shrink_to_fit(kernel, decisions, know)
        fits = _events_needed(shrunk)
        if fits <= facts.aio_headroom:
            decisions, needed = shrunk, fits
    store.save(kernel, know)
    probes_after = _kernel_probes(kernel)
    if probes_before is not None and probes_after is not None:
        probes = probes_after - probes_before
    else:
        probes = sum(e.probes for e in estimates) + know.calibration_probes
    return RestorePlan(
        kernel_name=kernel.name,
        kernel_is_live=kernel.is_live,
        decisions=decisions,
        budget_needed=needed,
        headroom=facts.aio_headroom,
        aio_max_nr=facts.aio_max_nr,
        aio_nr=facts.aio_nr,
        probes=probes,
        teardown_wait=waited,
    )


def _events_needed(decisions: Sequence[RingDecision]) -> int:
    """fs.aio-nr the restore charges: the chosen nr_req of every ring that has one,
    and for rings refused for budget, the least they would need."""
    total = 0
    for d in decisions:
        if d.status in (FINE, REWRITE):
            total += d.estimate.nr_req
        elif d.status == BUDGET:
            total += d.estimate.needed
    return total


def _shrink_to_fit(
    kernel: Kernel, decisions: tuple[RingDecision, ...], know: Knowledge
) -> tuple[RingDecision, ...]:
    fine = [d for d in decisions if d.status == FINE]
    if not fine:
        return decisions
    # Without a stored value the estimator answers the smallest working nr_req;
    # sizes are known by now, so this costs no probe when the model is right.
    smallest = estimate_many(
        kernel, [RingRequest(d.ring.ring_len, None, smallest=True) for d in fine], know
    )
    better = {
        id(d): e
        for d, e in zip(fine, smallest, strict=True)
        if e.verdict is Verdict.EXACT and e.nr_req < d.estimate.nr_req
    }
    return tuple(
        RingDecision(ring=d.ring, estimate=better[id(d)], status=REWRITE) if id(d) in better else d
        for d in decisions
    )


def _kernel_probes(kernel: Kernel) -> int | None:
    count = getattr(kernel, "probes", None)
    return count if isinstance(count, int) else None


def _all_confirmed(requests: Sequence[RingRequest], observed: Mapping[int, int]) -> bool:
    return all(
        r.stored_nr_req is not None and observed.get(r.stored_nr_req) == r.ring_len
        for r in requests
    )
