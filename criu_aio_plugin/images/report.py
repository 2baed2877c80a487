"""What a checkpoint's rings need on a kernel, and the fix that acts on it.

``assess`` turns the rings of an images directory and the estimator's plan
into a ``CheckpointReport`` (one row per ring: stored nr_req, the nr_req this
kernel needs, a status). ``fix_images`` is the library entry point behind
``criu-aio fix`` and the RPC RESTORE path: assess, then rewrite through
``rewrite`` when, and only when, every ring is reproducible here, the kernel
answering is the live one and this is not a dry run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.images import journal, rewrite
from criu_aio_plugin.images.mm import ImageRing, open_images_dir, read_mm_images, rings_of
from criu_aio_plugin.kernel.interface import HostFacts, Kernel

Log = Callable[[str], None]

FINE = "fine"
REWRITE = "rewrite"
IMPOSSIBLE = "impossible"
BUDGET = "budget"
ERROR = "error"

# Worst first: the checkpoint's verdict is its worst ring's.
_RANK = {FINE: 0, REWRITE: 1, BUDGET: 2, IMPOSSIBLE: 3, ERROR: 4}
_EXIT = {
    FINE: exitcodes.OK,
    REWRITE: exitcodes.FIXABLE,
    BUDGET: exitcodes.BUDGET,
    IMPOSSIBLE: exitcodes.IMPOSSIBLE,
    ERROR: exitcodes.ERROR,
}
_LABEL = {
    FINE: "fine",
    REWRITE: "needs rewrite",
    IMPOSSIBLE: "impossible here",
    BUDGET: "budget",
    ERROR: "error",
}


@dataclass(frozen=True)
class RingReport:
    """One ring on one kernel: what is stored and what would work."""

    ring: ImageRing
    status: str
    needed_nr_req: int
    reason: str = ""
    smallest_ring_len: int = 0

    @property
    def label(self) -> str:
        return _LABEL[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.ring.file,
            "pid": self.ring.pid,
            "ring": f"{self.ring.ring_id:#x}",
            "ring_len": self.ring.ring_len,
            "pages": self.ring.pages,
            "stored_nr_req": self.ring.nr_req,
            "needed_nr_req": self.needed_nr_req if self.status in (FINE, REWRITE) else None,
            "status": self.status,
            "verdict": self.label,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CheckpointReport:
    """Every ring of a checkpoint judged against one kernel."""

    images_dir: str
    kernel: str
    live: bool
    host: HostFacts | None
    rings: tuple[RingReport, ...]
    needed_events: int  # what fs.aio-nr grows by when the rings are restored
    headroom: int | None  # fs.aio-max-nr - fs.aio-nr now (None: unknown)
    probes: int = 0  # io_setup calls the estimate cost

    @property
    def status(self) -> str:
        worst = max((r.status for r in self.rings), key=_RANK.__getitem__, default=FINE)
        if _RANK[worst] < _RANK[BUDGET] and self.over_budget:
            return BUDGET
        return worst

    @property
    def over_budget(self) -> bool:
        return self.headroom is not None and self.needed_events > self.headroom

    @property
    def exit_code(self) -> int:
        return _EXIT[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "images_dir": self.images_dir,
            "kernel": self.kernel,
            "live": self.live,
            "host": self.host.as_dict() if self.host is not None else None,
            "status": self.status,
            "needed_events": self.needed_events,
            "headroom": self.headroom,
            "probes": self.probes,
            "rings": [r.to_json() for r in self.rings],
        }


def assess(images_dir: str, kernel: Kernel, rings: Sequence[ImageRing]) -> CheckpointReport:
    """Judge ``rings`` on ``kernel`` (the estimator probes once per distinct size)."""
    from criu_aio_plugin.estimator.plan import plan_rings

    host = kernel.facts()
    if not rings:
        return CheckpointReport(
            images_dir, kernel.name, kernel.is_live, host, (), 0, host.aio_headroom
        )
    plan = plan_rings(kernel, list(rings))
    reports = tuple(
        RingReport(
            d.ring,
            d.status if d.status in _RANK else ERROR,
            d.estimate.nr_req,
            d.estimate.reason,
            d.estimate.smallest_ring_len,
        )
        for d in plan.decisions
    )
    return CheckpointReport(
        images_dir,
        kernel.name,
        kernel.is_live,
        host,
        reports,
        plan.budget_needed,
        plan.headroom,
        plan.probes,
    )


def table(report: CheckpointReport) -> str:
    """The report as text: one row per ring, then the facts behind refusals."""
    head = ("PID", "RING", "RING_LEN", "PAGES", "STORED", "NEEDED", "VERDICT")
    rows = [
        (
            str(r.ring.pid),
            f"{r.ring.ring_id:#x}",
            str(r.ring.ring_len),
            str(r.ring.pages),
            str(r.ring.nr_req),
            str(r.needed_nr_req) if r.status in (FINE, REWRITE) else "-",
            r.label,
        )
        for r in report.rings
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (head, *rows)
    ]
    if not report.rings:
        lines = [f"{report.images_dir}: no AIO rings in any mm image"]
    host = report.host
    facts = f"kernel {report.kernel}"
    if host is not None:
        facts += (
            f" ({host.kernel_release}, {host.possible_cpus} possible CPUs, page {host.page_size})"
        )
    lines.append("")
    lines.append(facts)
    # One line per distinct reason: a checkpoint of 1,000 processes holding the
    # same ring sizes has a handful of reasons, not thousands.
    by_reason: dict[str, list[RingReport]] = {}
    for r in report.rings:
        if r.status in (IMPOSSIBLE, BUDGET, ERROR) and r.reason:
            by_reason.setdefault(r.reason, []).append(r)
    for reason, group in by_reason.items():
        first = group[0].ring
        more = f" and {len(group) - 1} more ring(s)" if len(group) > 1 else ""
        lines.append(f"{first.file} ring {first.ring_id:#x}{more}: {reason}")
    if report.headroom is not None:
        lines.append(
            f"restoring needs {report.needed_events} AIO events; fs.aio-max-nr leaves "
            f"{report.headroom} now" + (" (not enough)" if report.over_budget else "")
        )
    lines.append(f"verdict: {_LABEL[report.status]}")
    return "\n".join(lines)


@dataclass(frozen=True)
class FixResult:
    """What ``fix_images`` decided and did.

    ``written`` says whether any image changed. ``refused`` explains why
    nothing was written although rings need a new nr_req (dry run, kernel not
    live, impossible ring, budget); empty otherwise.
    """

    report: CheckpointReport
    applied: rewrite.ApplyResult | None
    written: bool
    refused: str = ""

    @property
    def changes(self) -> tuple[rewrite.RingChange, ...]:
        return self.applied.changes if self.applied is not None else ()

    @property
    def exit_code(self) -> int:
        status = self.report.status
        if status == FINE and self.applied is not None and self.applied.recovered:
            return exitcodes.FIXABLE
        return _EXIT[status]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.report.to_json(),
            "written": self.written,
            "refused": self.refused,
            "changes": [{**c.as_dict(), "ring_id": f"{c.ring_id:#x}"} for c in self.changes],
            "recovered": list(self.applied.recovered) if self.applied is not None else [],
        }


def _no_log(_: str) -> None:
    pass


def _wanted(report: CheckpointReport) -> dict[tuple[str, int], int]:
    return {
        (r.ring.file, r.ring.ring_id): r.needed_nr_req for r in report.rings if r.status == REWRITE
    }


def fix_images(
    images_dir: str | os.PathLike[str] | int,
    kernel: Kernel,
    *,
    dry_run: bool = False,
    log: Log = _no_log,
) -> FixResult:
    """Make every ring of the checkpoint restorable on ``kernel``, if it can be.

    ``images_dir`` is a path or an open directory fd (borrowed: the RPC path
    passes the fd it resolved through /proc/<peer>/fd/N). Images are written
    only when ``kernel.is_live``, ``dry_run`` is false, and no ring is
    impossible or unknown; the rewrite is transactional and journaled (see
    ``rewrite``). Raises ``ImageError`` for malformed or unwritable images,
    with nothing modified. Exit code and JSON: ``FixResult``.
    """
    if dry_run or not kernel.is_live:
        why = "dry run" if dry_run else f"kernel {kernel.name} is not the live kernel"
        with open_images_dir(images_dir) as (dir_fd, shown):
            images = read_mm_images(dir_fd)
            report = assess(shown, kernel, rings_of(images))
            applied = rewrite.apply_fix_locked(
                dir_fd,
                shown,
                _wanted(report),
                dry_run=True,
                images={image.name: image for image in images},
            )
            interrupted = journal.load(dir_fd, shown).pending is not None
        refused = f"{why}: nothing written" if applied.changes else ""
        if interrupted:
            # Read without the lock: the images may be mid-transaction.
            refused = (refused + "; " if refused else "") + (
                "an interrupted criu-aio run is pending: the next real run completes it first"
            )
        return FixResult(report, applied, False, refused)
    with rewrite.locked_dir(images_dir) as (dir_fd, shown):
        recovered = rewrite.recover(dir_fd, shown, log)
        images = read_mm_images(dir_fd)
        report = assess(shown, kernel, rings_of(images))
        status = report.status
        if status in (IMPOSSIBLE, ERROR) or any(r.status == BUDGET for r in report.rings):
            applied = rewrite.apply_fix_locked(
                dir_fd, shown, _wanted(report), dry_run=True, recovered=recovered
            )
            return FixResult(report, applied, bool(recovered), f"{_LABEL[status]}: nothing written")
        applied = rewrite.apply_fix_locked(
            dir_fd,
            shown,
            _wanted(report),
            host=report.host,
            kernel_name=kernel.name,
            log=log,
            recovered=recovered,
            images={image.name: image for image in images},
        )
        return FixResult(report, applied, applied.written or bool(recovered))
