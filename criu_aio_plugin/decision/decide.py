"""The restore decision: a pure function of a ``Judgement``.

Actions, by the checkpoint's worst status:

- ``error`` (EIO): some ring could not be sized: the kernel refused io_setup in
  a way the estimator does not expect;
- ``refuse-impossible`` (ERANGE): some ring cannot exist on this host (smaller
  than the smallest ring its possible-CPU count allows, or not whole pages);
- ``refuse-budget`` (EAGAIN): fs.aio-max-nr cannot hold the rings now;
- ``rewrite``: some ring needs another nr_req, which criu-aio writes;
- ``fine``: every stored nr_req recreates its ring; CRIU alone restores it.

The one rule for writing (``Decision.write``), whatever the entry point:

1. A report (``inspect``, ``check``, ``can-restore``, ``fix --dry-run``) never writes.
2. Only the live kernel's answers are written: a decision made against a
   simulated or remote kernel may refuse, never rewrite.
3. Nothing is written unless every ring has a known nr_req: with a ring that
   cannot exist, could not be sized, or was refused budget for its own
   io_setup, a partial rewrite would not make the checkpoint restorable.
4. A restore happening now (``RESTORE``: swrk, the service, ``criu-aio
   restore``) is refused for the budget and then writes nothing: CRIU would
   fail at io_setup with EAGAIN after rebuilding most of the tree. ``fix``
   (``FIX``) writes anyway when only the rings' total is over the budget,
   because the budget is a fact of now, not of the checkpoint: the nr_req
   values it writes are right for this kernel whatever else runs, and its exit
   code (5) still says that a restore now would fail.

Lean core (the restore path): no imports beyond the model and errno.
"""

from __future__ import annotations

import errno as _errno

from criu_aio_plugin.status import BUDGET, ERROR, FINE, IMPOSSIBLE, REWRITE, Status
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.decision.model import Judgement, RingVerdict

# Actions.
ACT_FINE = "fine"
ACT_REWRITE = "rewrite"
ACT_REFUSE_IMPOSSIBLE = "refuse-impossible"
ACT_REFUSE_BUDGET = "refuse-budget"
ACT_ERROR = "error"
_ACTION = {
    FINE: ACT_FINE,
    REWRITE: ACT_REWRITE,
    BUDGET: ACT_REFUSE_BUDGET,
    IMPOSSIBLE: ACT_REFUSE_IMPOSSIBLE,
    ERROR: ACT_ERROR,
}
_ERRNO = {FINE: 0, REWRITE: 0, BUDGET: _errno.EAGAIN, IMPOSSIBLE: _errno.ERANGE, ERROR: _errno.EIO}

# Intents: what the caller is about to do with the decision.
REPORT = "report"
FIX = "fix"
RESTORE = "restore"


class Decision(Value):
    """What to do with a judged checkpoint (see the module docstring).

    ``rewrites`` lists ``(mm image file name, ring id, new nr_req)`` for every
    ring that needs one, whether or not ``write`` allows writing them now;
    ``message`` is one line (a log line, cr_errmsg, stderr); ``problems`` one
    sentence per ring that keeps the checkpoint from restoring here, plus the
    budget's, each naming the file, the ring, its sizes, the host fact and what
    to do.
    """

    action: str
    status: Status
    intent: str
    write: bool
    errno: int
    message: str
    rewrites: tuple[tuple[str, int, int], ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """True when a restore must not start (impossible, budget, error)."""
        return not self.status.restorable

    @property
    def rewrite_map(self) -> dict[tuple[str, int], int]:
        """``{(file, ring id): nr_req}``, the key ``images.rewrite.apply_fix`` takes."""
        return {(f, ring): n for f, ring, n in self.rewrites}


def decide(j: Judgement, intent: str = REPORT) -> Decision:
    """The decision for *j* when the caller intends *intent* (REPORT, FIX, RESTORE)."""
    status = j.status
    rewrites = tuple(
        (r.ring.file, r.ring.ring_id, r.nr_req) for r in j.rings if r.status is REWRITE
    )
    problems = tuple(_problem(r) for r in j.rings if not r.status.restorable)
    if j.over_budget:
        problems += (_budget_problem(j),)
    all_known = all(r.status.restorable for r in j.rings)
    write = (
        intent != REPORT
        and bool(rewrites)
        and j.live
        and all_known
        and (status is REWRITE or (intent == FIX and status is BUDGET))
    )
    return Decision(
        action=_ACTION[status],
        status=status,
        intent=intent,
        write=write,
        errno=_ERRNO[status],
        message=_message(j, status, rewrites, problems),
        rewrites=rewrites,
        problems=problems,
    )


def _where(j: Judgement) -> str:
    h = j.host
    return (
        f"{j.kernel} ({h.kernel_release}, {h.possible_cpus} possible CPUs, "
        f"{h.page_size}-byte pages)"
    )


def _problem(r: RingVerdict) -> str:
    reason = r.reason.rstrip(".") or r.status.meaning
    if r.status is IMPOSSIBLE:
        return (
            f"{r.label} cannot exist on this host: {reason}; "
            "`criu-aio can-restore DIR --profile HOST.json` tells which hosts can restore it"
        )
    if r.status is BUDGET:
        return f"{r.label}: io_setup refused for the AIO budget: {reason}"
    return f"could not size {r.label}: {reason}; `criu-aio inspect DIR` shows every ring"


def _budget_problem(j: Judgement) -> str:
    h = j.host
    return (
        f"the checkpoint's rings need {j.budget_needed} AIO events (sum of nr_req) but "
        f"fs.aio-max-nr={h.aio_max_nr} with fs.aio-nr={h.aio_nr} in use leaves {j.headroom}: "
        f"raise fs.aio-max-nr to at least {h.aio_nr + j.budget_needed} "
        "(sysctl -w fs.aio-max-nr=N) or stop processes holding AIO contexts, then retry"
    )


def _message(
    j: Judgement,
    status: Status,
    rewrites: tuple[tuple[str, int, int], ...],
    problems: tuple[str, ...],
) -> str:
    n = len(j.rings)
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{first} [on {_where(j)}]{more}"
    if status is REWRITE:
        return (
            f"{len(rewrites)} of {n} AIO ring(s) need a new nr_req on {_where(j)}; "
            f"restoring needs {j.budget_needed} of {j.headroom} fs.aio-nr headroom"
        )
    if not n:
        return f"no AIO rings in {j.checkpoint or 'the checkpoint'}: nothing for criu-aio to do"
    return (
        f"{n} AIO ring(s), all fine as stored on {_where(j)}; "
        f"restoring needs {j.budget_needed} of {j.headroom} fs.aio-nr headroom"
    )
