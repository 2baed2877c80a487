"""Which hosts can restore a checkpoint: its rings x host profiles -> verdicts.

How it works. A host profile carries the host's ring-sizing model; a
``SimulatedKernel`` built from it answers io_setup(n) exactly as that host
would. The checkpoint's rings are then judged by the very code the live
restore path runs (``images.report.assess`` over the estimator's
``plan_rings``), so the verdict for a host is the one criu-aio would reach on
that host, at the fs.aio-nr recorded in its profile:

- ``criu``: every stored nr_req already reproduces its ring: CRIU alone restores;
- ``criu-aio``: some ring needs another nr_req, which criu-aio writes;
- ``budget``: the rings can exist there, but fs.aio-max-nr minus fs.aio-nr (at
  profiling time) cannot hold the events they need, or fs.aio-max-nr itself
  cannot;
- ``impossible``: some ring cannot exist there (smaller than the host's smallest
  ring, or not a multiple of its page size): no nr_req helps;
- ``error``: the estimator met something it did not expect.

Nothing here reads or writes images or touches the live kernel: the caller
passes rings (``images.mm.read_rings``) and validated profiles.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.fleet.profiles import HostProfile
from criu_aio_plugin.images import report as _report
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel.simulated import SimulatedKernel


class Placement(enum.Enum):
    """How (and whether) a host can restore the checkpoint; ordered best first."""

    CRIU = "criu"
    CRIU_AIO = "criu-aio"
    BUDGET = "budget"
    IMPOSSIBLE = "impossible"
    ERROR = "error"

    @property
    def restorable(self) -> bool:
        return self in (Placement.CRIU, Placement.CRIU_AIO)

    @property
    def text(self) -> str:
        return _TEXT[self]

    @property
    def exit_code(self) -> int:
        return _EXIT[self]


_TEXT = {
    Placement.CRIU: "CRIU alone",
    Placement.CRIU_AIO: "with criu-aio",
    Placement.BUDGET: "not now (AIO budget)",
    Placement.IMPOSSIBLE: "not at all",
    Placement.ERROR: "error",
}
_EXIT = {
    Placement.CRIU: exitcodes.OK,
    Placement.CRIU_AIO: exitcodes.FIXABLE,
    Placement.BUDGET: exitcodes.BUDGET,
    Placement.IMPOSSIBLE: exitcodes.IMPOSSIBLE,
    Placement.ERROR: exitcodes.ERROR,
}
_FROM_STATUS = {
    _report.FINE: Placement.CRIU,
    _report.REWRITE: Placement.CRIU_AIO,
    _report.BUDGET: Placement.BUDGET,
    _report.IMPOSSIBLE: Placement.IMPOSSIBLE,
    _report.ERROR: Placement.ERROR,
}
_RANK = {p: i for i, p in enumerate(Placement)}


@dataclass(frozen=True)
class HostVerdict:
    """One host's answer: the placement, the budget, and the facts behind it."""

    profile: HostProfile
    placement: Placement
    report: _report.CheckpointReport
    aio_max_nr: int
    reasons: tuple[str, ...]

    @property
    def host(self) -> str:
        return self.profile.name

    @property
    def needed_events(self) -> int:
        """fs.aio-nr the restore adds there (sum of the nr_req it would use)."""
        return self.report.needed_events

    @property
    def headroom(self) -> int | None:
        return self.report.headroom

    def to_json(self) -> dict[str, Any]:
        doc = self.profile.document
        return {
            "host": self.host,
            "profile": self.profile.source,
            "kernel_release": doc["host"]["kernel_release"],
            "possible_cpus": doc["host"]["possible_cpus"],
            "page_size": doc["host"]["page_size"],
            "smallest_ring_len": doc["smallest_ring"]["len"],
            "verdict": self.placement.value,
            "restorable": self.placement.restorable,
            "exit_code": self.placement.exit_code,
            "needed_events": self.needed_events,
            "headroom": self.headroom,
            "aio_max_nr": self.aio_max_nr,
            "reasons": list(self.reasons),
            "rings": [r.to_json() for r in self.report.rings],
        }


def _reasons(rep: _report.CheckpointReport, aio_max_nr: int) -> tuple[str, ...]:
    out = [
        f"{r.ring.file} ring {r.ring.ring_id:#x} ({r.ring.ring_len} bytes): {r.reason or r.label}"
        for r in rep.rings
        if r.status in (_report.IMPOSSIBLE, _report.BUDGET, _report.ERROR)
    ]
    if rep.over_budget:
        if rep.needed_events > aio_max_nr:
            out.append(
                f"the rings need {rep.needed_events} AIO events, more than fs.aio-max-nr "
                f"{aio_max_nr} there (raise it: sysctl fs.aio-max-nr={rep.needed_events})"
            )
        else:
            out.append(
                f"the rings need {rep.needed_events} AIO events; fs.aio-max-nr left "
                f"{rep.headroom} when the profile was taken"
            )
    return tuple(out)


def place(rings: Sequence[ImageRing], profile: HostProfile, images_dir: str = "") -> HostVerdict:
    """Judge ``rings`` on the host ``profile`` describes."""
    kernel = SimulatedKernel.from_profile(profile.document)
    aio_max_nr = kernel.aio_max_nr
    try:
        rep = _report.assess(images_dir, kernel, rings)
    finally:
        kernel.close()
    placement = _FROM_STATUS.get(rep.status, Placement.ERROR)
    return HostVerdict(profile, placement, rep, aio_max_nr, _reasons(rep, aio_max_nr))


@dataclass(frozen=True)
class FleetVerdict:
    """Every host's verdict for one checkpoint."""

    images_dir: str
    rings: tuple[ImageRing, ...]
    hosts: tuple[HostVerdict, ...]

    @property
    def restorable_hosts(self) -> list[str]:
        return [h.host for h in self.hosts if h.placement.restorable]

    def exit_code(self, *, any_host: bool = False) -> int:
        """The worst host's code; with ``any_host``, the best host's."""
        if not self.hosts:
            return exitcodes.ERROR
        ranked = sorted(self.hosts, key=lambda h: _RANK[h.placement])
        chosen = ranked[0] if any_host else ranked[-1]
        return chosen.placement.exit_code

    def to_json(self, *, any_host: bool = False) -> dict[str, Any]:
        return {
            "images_dir": self.images_dir,
            "rings": [
                {
                    "file": r.file,
                    "pid": r.pid,
                    "ring": f"{r.ring_id:#x}",
                    "ring_len": r.ring_len,
                    "nr_req": r.nr_req,
                }
                for r in self.rings
            ],
            "hosts": [h.to_json() for h in self.hosts],
            "restorable_hosts": self.restorable_hosts,
            "exit_code": self.exit_code(any_host=any_host),
        }


def place_all(
    rings: Sequence[ImageRing], profiles: Sequence[HostProfile], images_dir: str = ""
) -> FleetVerdict:
    """Judge ``rings`` on every host in ``profiles`` (in the given order)."""
    verdicts = tuple(place(rings, p, images_dir) for p in profiles)
    return FleetVerdict(images_dir, tuple(rings), verdicts)


def table(fleet: FleetVerdict) -> str:
    """A per-host table, then the facts behind each refusal."""
    head = ("HOST", "KERNEL", "CPUS", "PAGE", "SMALLEST", "NEEDS", "HEADROOM", "VERDICT")
    rows = []
    for h in fleet.hosts:
        host = h.profile.document["host"]
        smallest = h.profile.document["smallest_ring"]
        rows.append(
            (
                h.host,
                str(host["kernel_release"]),
                str(host["possible_cpus"]),
                str(host["page_size"]),
                f"{smallest['pages']}p",
                str(h.needed_events) if h.placement.restorable else "-",
                "?" if h.headroom is None else str(h.headroom),
                h.placement.text,
            )
        )
    widths = [max(len(cell) for cell in col) for col in zip(head, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (head, *rows)
    ]
    pages = sorted({r.ring_len for r in fleet.rings})
    lines.insert(
        0,
        f"{fleet.images_dir}: {len(fleet.rings)} AIO ring(s), lengths {pages} bytes"
        if fleet.rings
        else f"{fleet.images_dir}: no AIO rings: every host can restore it as far as AIO goes",
    )
    for h in fleet.hosts:
        lines += [f"{h.host}: {reason}" for reason in h.reasons]
    return "\n".join(lines)
