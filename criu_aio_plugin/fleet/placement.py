"""Which hosts can restore a checkpoint: its rings x host profiles -> verdicts.

How it works. A host profile carries the host's ring-sizing model; a
``SimulatedKernel`` built from it answers io_setup(n) exactly as that host
would. The checkpoint's rings are then judged by the very code the live
restore path and ``criu-aio check --images-dir`` run (the estimator's
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
from criu_aio_plugin.estimator import plan as _plan
from criu_aio_plugin.fleet.profiles import HostProfile
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
    _plan.FINE: Placement.CRIU,
    _plan.REWRITE: Placement.CRIU_AIO,
    _plan.BUDGET: Placement.BUDGET,
    _plan.IMPOSSIBLE: Placement.IMPOSSIBLE,
    _plan.ERROR: Placement.ERROR,
}
_RANK = {p: i for i, p in enumerate(Placement)}


@dataclass(frozen=True)
class HostVerdict:
    """One host's answer: the placement, the budget, and the facts behind it."""

    profile: HostProfile
    placement: Placement
    plan: _plan.RestorePlan

    @property
    def host(self) -> str:
        return self.profile.name

    @property
    def needed_events(self) -> int:
        """fs.aio-nr the restore adds there: the chosen nr_req, plus, for rings the
        budget refused, the fewest events that would build them (the plan counts
        both)."""
        return self.plan.budget_needed

    @property
    def headroom(self) -> int:
        return self.plan.headroom

    @property
    def aio_max_nr(self) -> int:
        return self.plan.aio_max_nr

    @property
    def reasons(self) -> list[str]:
        """Why the host cannot restore (empty when it can): file, ring, sizes, host fact."""
        return self.plan.problems()

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
            "reasons": self.reasons,
            "rings": [
                {
                    "file": d.ring.file,
                    "ring": f"{d.ring.ring_id:#x}",
                    "ring_len": d.ring.ring_len,
                    "stored_nr_req": d.ring.nr_req,
                    "status": d.status,
                    "nr_req": d.estimate.nr_req if d.status in _RESTORABLE else None,
                    "reason": d.estimate.reason,
                }
                for d in self.plan.decisions
            ],
        }


_RESTORABLE = (_plan.FINE, _plan.REWRITE)
_NO_TOTAL = (Placement.IMPOSSIBLE, Placement.ERROR)  # some ring has no nr_req at all


def place(rings: Sequence[ImageRing], profile: HostProfile) -> HostVerdict:
    """Judge ``rings`` on the host ``profile`` describes."""
    kernel = SimulatedKernel.from_profile(profile.document)
    try:
        plan = _plan.plan_rings(kernel, rings)
    finally:
        kernel.close()
    return HostVerdict(profile, _FROM_STATUS.get(plan.status, Placement.ERROR), plan)


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
    verdicts = tuple(place(rings, p) for p in profiles)
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
                "-" if h.placement in _NO_TOTAL else str(h.needed_events),
                str(h.headroom),
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
