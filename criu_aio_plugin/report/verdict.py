"""A judged checkpoint as a table and as the versioned JSON verdict document.

The JSON shapes (``ring``, ``verdict``) are specified in
docs/schemas/verdict.schema.json and described in docs/json-output.md; every
command that shows a checkpoint's rings (inspect, check --images-dir,
can-restore, fix) uses them.
"""

from __future__ import annotations

from typing import Any

from criu_aio_plugin.decision.checkpoint import Outcome
from criu_aio_plugin.decision.decide import Decision
from criu_aio_plugin.decision.model import Judgement, RingVerdict
from criu_aio_plugin.status import BUDGET, ERROR, IMPOSSIBLE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.archive import ArchiveCheckpoint

SCHEMA = "criu-aio/verdict"
VERSION = 1


def ring_json(r: RingVerdict) -> dict[str, Any]:
    """One ring: where it is, what is stored, what a restore here uses, and why."""
    return {
        "file": r.ring.file,
        "pid": r.ring.pid,
        "ring": f"{r.ring.ring_id:#x}",
        "ring_len": r.ring.ring_len,
        "pages": r.ring.pages,
        "stored_nr_req": r.ring.nr_req,
        "nr_req": r.nr_req if r.status.restorable else None,
        "status": r.status.name,
        "label": r.status.label,
        "reason": r.reason,
    }


def kernel_json(j: Judgement) -> dict[str, Any]:
    h = j.host
    return {
        "name": j.kernel,
        "live": j.live,
        "release": h.kernel_release,
        "machine": h.machine,
        "possible_cpus": h.possible_cpus,
        "page_size": h.page_size,
    }


def archive_json(a: ArchiveCheckpoint) -> dict[str, Any]:
    """A checkpoint archive: where its images are, its format, the container it holds."""
    return {
        "path": a.path,
        "compression": a.compression.value,
        "images": a.images_prefix or "./",
        "container": a.container.to_json() if a.container is not None else None,
        "processes": len(a.processes),
        "img_version": a.img_version,
    }


def container_line(a: ArchiveCheckpoint) -> str:
    """One line naming the archive, its format and the container it holds."""
    held = a.container.describe() if a.container is not None else "no container metadata"
    return f"archive {a.path} ({a.compression.value}): {held}"


def verdict_json(
    j: Judgement, d: Decision, *, archive: ArchiveCheckpoint | None = None
) -> dict[str, Any]:
    """The verdict document (schema ``criu-aio/verdict``, version 1).

    For an archive, ``archive`` describes it and every ring names the
    container (``container``): the same document otherwise.
    """
    doc = _verdict_json(j, d)
    if archive is not None:
        doc["archive"] = archive_json(archive)
        name = archive.container.name if archive.container is not None else None
        for ring in doc["rings"]:
            ring["container"] = name or None
    return doc


def _verdict_json(j: Judgement, d: Decision) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "checkpoint": j.checkpoint,
        "kernel": kernel_json(j),
        "status": d.status.name,
        "label": d.status.label,
        "meaning": d.status.meaning,
        "decision": d.action,
        "message": d.message,
        "problems": list(d.problems),
        "budget": {
            "needed": j.budget_needed,
            "headroom": j.headroom,
            "aio_max_nr": j.host.aio_max_nr,
            "aio_nr": j.host.aio_nr,
            "fits": not j.over_budget,
        },
        "probes": j.probes,
        "rewrites": [{"file": f, "ring": f"{ring:#x}", "nr_req": n} for f, ring, n in d.rewrites],
        "rings": [ring_json(r) for r in j.rings],
    }


def fix_json(
    outcome: Outcome, *, dry_run: bool, archive: ArchiveCheckpoint | None = None
) -> dict[str, Any]:
    """The verdict plus what ``fix`` did (or would do) to the images."""
    d = outcome.decision
    doc = verdict_json(outcome.judgement, d, archive=archive)
    doc["fix"] = {
        "dry_run": dry_run,
        "written": outcome.written,
        "not_written": not_written_reason(outcome, dry_run=dry_run),
        "changes": [
            {
                "file": c.file,
                "ring": f"{c.ring_id:#x}",
                "ring_len": c.ring_len,
                "old_nr_req": c.old_nr_req,
                "new_nr_req": c.new_nr_req,
            }
            for c in outcome.changes
        ],
        "files": list(outcome.files),
        "recovered": list(outcome.recovered),
        "pending": outcome.pending,
    }
    return doc


def not_written_reason(outcome: Outcome, *, dry_run: bool) -> str:
    """Why rings that need a new nr_req were not written (empty when written or none)."""
    d, j = outcome.decision, outcome.judgement
    if outcome.written or not outcome.changes:
        return ""
    if dry_run:
        return "dry run: nothing written"
    if not j.live:
        return f"kernel {j.kernel} is not the live kernel: nothing written"
    if d.status in (IMPOSSIBLE, ERROR) or any(r.status is BUDGET for r in j.rings):
        return f"{d.status.label}: nothing written (some ring has no nr_req that works here)"
    return "nothing written"


def table(j: Judgement, d: Decision, *, archive: ArchiveCheckpoint | None = None) -> str:
    """One row per ring, then the facts behind the verdict (inspect, check, fix).

    For an archive, a first line names it and its container, and every row
    names the container too.
    """
    head: tuple[str, ...] = ("PID", "RING", "RING_LEN", "PAGES", "STORED", "NR_REQ HERE", "STATUS")
    rows: list[tuple[str, ...]] = [
        (
            str(r.ring.pid),
            f"{r.ring.ring_id:#x}",
            str(r.ring.ring_len),
            str(r.ring.pages),
            str(r.ring.nr_req),
            str(r.nr_req) if r.status.restorable else "-",
            r.status.label,
        )
        for r in j.rings
    ]
    if archive is not None:
        c = archive.container
        name = (c.name or c.id[:12]) if c is not None else ""
        head = ("CONTAINER", *head)
        rows = [(name or "-", *row) for row in rows]
    if rows:
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (head, *rows)
        ]
    else:
        lines = [f"{j.checkpoint}: no AIO rings in any mm image"]
    if archive is not None:
        lines.insert(0, container_line(archive))
    h = j.host
    lines.append("")
    lines.append(
        f"kernel {j.kernel} ({h.kernel_release}, {h.possible_cpus} possible CPUs, "
        f"page {h.page_size})"
    )
    # One line per distinct reason: a checkpoint of 1,000 processes holding the
    # same ring sizes has a handful of reasons, not thousands.
    by_reason: dict[str, list[RingVerdict]] = {}
    for r in j.rings:
        if not r.status.restorable and r.reason:
            by_reason.setdefault(r.reason, []).append(r)
    for reason, group in by_reason.items():
        first = group[0].ring
        more = f" and {len(group) - 1} more ring(s)" if len(group) > 1 else ""
        lines.append(f"{first.file} ring {first.ring_id:#x}{more}: {reason}")
    if j.rings:
        lines.append(
            f"restoring needs {j.budget_needed} AIO events; fs.aio-max-nr leaves "
            f"{j.headroom} now" + (" (not enough)" if j.over_budget else "")
        )
    lines.append(f"verdict: {d.status.label}: {d.status.meaning}")
    return "\n".join(lines)
