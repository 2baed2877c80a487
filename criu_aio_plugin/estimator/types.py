"""Values the estimator returns (shared with the image tools and the interposer)."""

from __future__ import annotations

import enum

from criu_aio_plugin.values import Value


class Verdict(enum.Enum):
    """What the estimator concluded for one ring on one kernel."""

    EXACT = "exact"  # nr_req reproduces the ring exactly
    IMPOSSIBLE = "impossible"  # no nr_req can: the ring is below this host's smallest ring
    BUDGET = "budget"  # fs.aio-max-nr cannot hold it (now)
    ERROR = "error"  # the kernel refused in a way we did not expect


class Estimate(Value):
    """The estimator's answer for a ring of ``ring_len`` bytes.

    ``nr_req`` is the value to store (meaningful for EXACT); ``probes`` counts
    io_setup calls made for this estimate (0 when answered from the model or cache
    already confirmed this boot); ``reason`` is a sentence naming the facts behind
    a non-EXACT verdict (floor, possible CPUs, aio-max-nr numbers, errno).
    ``source`` says where an EXACT nr_req came from: ``confirmed`` (observed this
    boot, no probe), ``stored`` (the image's value, probed), ``model`` (the
    model's guess, probed) or ``converged`` (search). ``needed`` is, for BUDGET,
    the smallest nr_req that could give the ring.
    """

    __slots__ = (
        "needed",
        "nr_req",
        "possible_cpus",
        "probes",
        "reason",
        "ring_len",
        "smallest_ring_len",
        "source",
        "verdict",
    )
    ring_len: int
    nr_req: int
    verdict: Verdict
    probes: int
    reason: str
    smallest_ring_len: int
    possible_cpus: int
    source: str
    needed: int

    def __init__(
        self,
        ring_len: int,
        nr_req: int,
        verdict: Verdict,
        probes: int = 0,
        reason: str = "",
        smallest_ring_len: int = 0,
        possible_cpus: int = 0,
        source: str = "",
        needed: int = 0,
    ) -> None:
        self._freeze(
            ring_len=ring_len,
            nr_req=nr_req,
            verdict=verdict,
            probes=probes,
            reason=reason,
            smallest_ring_len=smallest_ring_len,
            possible_cpus=possible_cpus,
            source=source,
            needed=needed,
        )

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.EXACT
