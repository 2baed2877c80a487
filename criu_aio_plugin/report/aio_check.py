"""The AIO check's report (``estimator.check``) as text and as JSON (criu-aio/aio-check v2)."""

from __future__ import annotations

from typing import Any

from criu_aio_plugin.estimator.check import FORMULA_TEXT, AioCheckReport, compact_ranges
from criu_aio_plugin.status import ALL, Status


def to_json(report: AioCheckReport) -> dict[str, Any]:
    return {
        "schema": "criu-aio/aio-check",
        "version": 2,
        "kernel": report.kernel_name,
        "page_size": report.page_size,
        "possible_cpus": report.possible_cpus,
        "smallest_ring_len": report.smallest_ring_len,
        "max_pages": report.max_pages,
        "ok": report.ok,
        "status": report.worst.name,
        "summary": report.summary,
        "probes": report.probes,
        "statuses": {s.name: compact_ranges(report.pages_of(s)) for s in ALL},
        "sizes": [
            {
                "pages": s.pages,
                "ring_len": s.ring_len,
                "criu_nr_req": s.criu_nr_req,
                "criu_ring_len": s.criu_ring_len,
                "status": s.status.name,
                "nr_req": s.nr_req,
                "reason": s.reason,
            }
            for s in report.sizes
        ],
    }


def size_table(report: AioCheckReport) -> list[str]:
    """Runs of consecutive ring sizes with the same status, one line each."""
    lines = [f"  {'pages':<11} {'status':<28} CRIU nr_req -> ring pages   criu-aio nr_req"]
    runs: list[tuple[Status, list[Any]]] = []
    for s in report.sizes:
        if runs and runs[-1][0] is s.status and runs[-1][1][-1].pages == s.pages - 1:
            runs[-1][1].append(s)
        else:
            runs.append((s.status, [s]))
    for status, sizes in runs:
        first, last = sizes[0], sizes[-1]
        span = f"{first.pages}" if first is last else f"{first.pages}-{last.pages}"
        criu = _span([s.criu_nr_req for s in sizes])
        got = _span([s.criu_ring_len // report.page_size for s in sizes])
        ours = _span([s.nr_req for s in sizes]) if status.restorable else "-"
        text = FORMULA_TEXT[status]
        lines.append(f"  {span:<11} {text:<28} {criu + ' -> ' + got:<25} {ours}")
    return lines


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}..{hi}"


def text(report: AioCheckReport) -> str:
    head = (
        f"AIO ring sizing on {report.kernel_name}: {report.possible_cpus} possible CPUs, "
        f"{report.page_size}-byte pages, smallest ring "
        f"{report.smallest_ring_len // report.page_size} page(s)"
    )
    return "\n".join([head, *size_table(report), report.summary])
