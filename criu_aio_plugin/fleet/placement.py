"""Which hosts can restore a checkpoint: its rings x host profiles -> verdicts.

How it works. A host profile carries the host's ring-sizing model; a
``SimulatedKernel`` built from it answers io_setup(n) exactly as that host
would. The checkpoint's rings are then judged and decided by the very code the
live restore path runs (``decision.judge`` and ``decision.decide``), so the
verdict for a host is the one criu-aio would reach on that host, at the
fs.aio-nr recorded in its profile. Its status (``criu_aio_plugin.status``):

- fine: every stored nr_req already reproduces its ring: CRIU alone restores;
- rewrite: some ring needs another nr_req, which criu-aio writes;
- budget: the rings can exist there, but fs.aio-max-nr minus fs.aio-nr (at
  profiling time) cannot hold the events they need;
- impossible: some ring cannot exist there (smaller than the host's smallest
  ring, or not a multiple of its page size): no nr_req helps;
- error: the estimator met something it did not expect.

Nothing here reads or writes images or touches the live kernel: the caller
passes rings (``images.mm``) and validated profiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from criu_aio_plugin import status as st
from criu_aio_plugin.decision.decide import REPORT, Decision, decide
from criu_aio_plugin.decision.judge import judge
from criu_aio_plugin.decision.model import Judgement
from criu_aio_plugin.estimator.profile import kernel_from_profile
from criu_aio_plugin.fleet.profiles import HostProfile
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.report.verdict import verdict_json

# What a status says about a host in the fleet table.
_HOST_TEXT = {
    st.FINE: "CRIU alone",
    st.REWRITE: "with criu-aio",
    st.BUDGET: "not now (AIO budget)",
    st.IMPOSSIBLE: "not at all",
    st.ERROR: "error",
}


@dataclass(frozen=True)
class HostVerdict:
    """One host's answer: the judgement on its simulated kernel and the decision."""

    profile: HostProfile
    judgement: Judgement
    decision: Decision

    @property
    def host(self) -> str:
        return self.profile.name

    @property
    def status(self) -> st.Status:
        return self.decision.status

    def to_json(self) -> dict[str, Any]:
        doc = self.profile.document
        return {
            "host": self.host,
            "profile": self.profile.source,
            "kernel_release": doc["host"]["kernel_release"],
            "possible_cpus": doc["host"]["possible_cpus"],
            "page_size": doc["host"]["page_size"],
            "smallest_ring_len": doc["smallest_ring"]["len"],
            "status": self.status.name,
            "restorable": self.status.restorable,
            "verdict": verdict_json(self.judgement, self.decision),
        }


def place(rings: Sequence[ImageRing], profile: HostProfile, checkpoint: str = "") -> HostVerdict:
    """Judge ``rings`` on the host ``profile`` describes."""
    kernel = kernel_from_profile(profile.document)
    try:
        judgement = judge(kernel, rings, checkpoint)
    finally:
        kernel.close()
    return HostVerdict(profile, judgement, decide(judgement, REPORT))


@dataclass(frozen=True)
class FleetVerdict:
    """Every host's verdict for one checkpoint."""

    checkpoint: str
    rings: tuple[ImageRing, ...]
    hosts: tuple[HostVerdict, ...]

    @property
    def restorable_hosts(self) -> list[str]:
        return [h.host for h in self.hosts if h.status.restorable]

    def status(self, *, any_host: bool = False) -> st.Status:
        """The worst host's status; with ``any_host``, the best host's (ERROR: no hosts)."""
        if not self.hosts:
            return st.ERROR
        statuses = [h.status for h in self.hosts]
        return st.best(statuses) if any_host else st.worst(statuses)

    def to_json(self, *, any_host: bool = False) -> dict[str, Any]:
        return {
            "schema": "criu-aio/can-restore",
            "version": 2,
            "checkpoint": self.checkpoint,
            "rings": [
                {
                    "file": r.file,
                    "pid": r.pid,
                    "ring": f"{r.ring_id:#x}",
                    "ring_len": r.ring_len,
                    "pages": r.pages,
                    "stored_nr_req": r.nr_req,
                }
                for r in self.rings
            ],
            "hosts": [h.to_json() for h in self.hosts],
            "restorable_hosts": self.restorable_hosts,
            "status": self.status(any_host=any_host).name,
            "any": any_host,
        }


def place_all(
    rings: Sequence[ImageRing], profiles: Sequence[HostProfile], checkpoint: str = ""
) -> FleetVerdict:
    """Judge ``rings`` on every host in ``profiles`` (in the given order)."""
    verdicts = tuple(place(rings, p, checkpoint) for p in profiles)
    return FleetVerdict(checkpoint, tuple(rings), verdicts)


def table(fleet: FleetVerdict) -> str:
    """A per-host table, then the facts behind each refusal."""
    head = ("HOST", "KERNEL", "CPUS", "PAGE", "SMALLEST", "NEEDS", "HEADROOM", "VERDICT")
    rows = []
    for h in fleet.hosts:
        host = h.profile.document["host"]
        smallest = h.profile.document["smallest_ring"]
        no_total = h.status in (st.IMPOSSIBLE, st.ERROR)  # some ring has no nr_req at all
        rows.append(
            (
                h.host,
                str(host["kernel_release"]),
                str(host["possible_cpus"]),
                str(host["page_size"]),
                f"{smallest['pages']}p",
                "-" if no_total else str(h.judgement.budget_needed),
                str(h.judgement.headroom),
                _HOST_TEXT[h.status],
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
        f"{fleet.checkpoint}: {len(fleet.rings)} AIO ring(s), lengths {pages} bytes"
        if fleet.rings
        else f"{fleet.checkpoint}: no AIO rings: every host can restore it as far as AIO goes",
    )
    for h in fleet.hosts:
        lines += [f"{h.host}: {problem}" for problem in h.decision.problems]
    return "\n".join(lines)
