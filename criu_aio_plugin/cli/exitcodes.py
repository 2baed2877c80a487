"""Exit codes: the one table, the same meaning for every criu-aio command.

This is the only place where a status (``criu_aio_plugin.status``) becomes an
exit code; library code and the lower layers (rpc, images, fleet) never see
exit codes. Lean core: ``criu-aio swrk`` imports it.

    0  the checkpoint restores here: nothing was needed, or criu-aio made it so
       (``fix`` that rewrote exits 0); for check, CRIU's formula is right here
    1  error: could not do the job (message on stderr)
    2  usage error (bad or unknown option)
    3  report only (inspect, check, can-restore, fix --dry-run, a non-live
       --kernel): CRIU alone would fail, criu-aio fixes it; never after a fix
    4  some ring cannot exist on this host: no nr_req helps
    5  fs.aio-max-nr cannot hold the rings now
    6  check only: CRIU's own `criu check` failed

With more than one problem the most severe wins: error, CRIU's check failed,
impossible, budget, fixable.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.status import Status

OK = 0
ERROR = 1
USAGE = 2
FIXABLE = 3
IMPOSSIBLE = 4
BUDGET = 5
CRIU_CHECK_FAILED = 6

DESCRIPTIONS = {
    OK: "restores here: nothing was needed, or criu-aio made it so",
    ERROR: "error (message on stderr)",
    USAGE: "usage error (bad or unknown option)",
    FIXABLE: "report only: CRIU alone would fail, criu-aio fixes it",
    IMPOSSIBLE: "some ring cannot exist on this host: no nr_req helps",
    BUDGET: "fs.aio-max-nr cannot hold the rings now",
    CRIU_CHECK_FAILED: "CRIU's own `criu check` failed",
}

# The codes of every command that judges a checkpoint (inspect, check, fix, can-restore).
CHECKPOINT_CODES = (OK, FIXABLE, IMPOSSIBLE, BUDGET, ERROR, USAGE)

# By status name (criu_aio_plugin.status): the pass-through path imports this
# module but never needs the statuses themselves.
_BY_STATUS = {
    "fine": OK,
    "rewrite": FIXABLE,
    "budget": BUDGET,
    "impossible": IMPOSSIBLE,
    "error": ERROR,
}


def for_status(status: Status, *, made_restorable: bool = False) -> int:
    """The exit code of a command whose verdict is *status*.

    ``made_restorable``: the command itself made the rewrite (``fix`` that
    wrote), so "needs rewrite" has become "restores here" (0).
    """
    if status.name == "rewrite" and made_restorable:
        return OK
    return _BY_STATUS[status.name]


def for_refusal(status: Status) -> int:
    """The exit code of a request criu-aio answered instead of starting CRIU."""
    return _BY_STATUS[status.name] if status.name in ("impossible", "budget") else ERROR


def worst_code(codes: list[int]) -> int:
    """The most severe of several exit codes (the order of the module docstring)."""
    order = (ERROR, CRIU_CHECK_FAILED, IMPOSSIBLE, BUDGET, FIXABLE, OK)
    for code in order:
        if code in codes:
            return code
    return OK


def epilog(*codes: int, note: str = "") -> str:
    """An --help epilog listing *codes* with their meaning (the one table)."""
    lines = ["exit codes (the same for every criu-aio command):"]
    lines += [f"  {c}  {DESCRIPTIONS[c]}" for c in codes]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def refusal_epilog() -> str:
    """The exit codes of a command that hands over to CRIU (swrk, restore)."""
    return epilog(
        ERROR,
        USAGE,
        IMPOSSIBLE,
        BUDGET,
        note="These only when criu-aio answered instead of CRIU; once CRIU runs, the exit\n"
        "code is CRIU's own.",
    )
