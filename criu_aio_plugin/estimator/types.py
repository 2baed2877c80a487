"""Values the estimator returns (shared with the image tools and the interposer)."""

from __future__ import annotations

from criu_aio_plugin.status import FINE, REWRITE, Status
from criu_aio_plugin.values import Value


class Estimate(Value):
    """The estimator's answer for a ring of ``ring_len`` bytes.

    ``status`` is one of the statuses of ``criu_aio_plugin.status``: ``FINE``
    when the stored nr_req recreates the ring, ``REWRITE`` when ``nr_req``
    (another value) does, ``IMPOSSIBLE``, ``BUDGET`` or ``ERROR`` when none was
    found. ``nr_req`` is the value to store (meaningful when ``ok``); ``probes`` counts
    io_setup calls made for this estimate (0 when answered from the model or cache
    already confirmed this boot); ``reason`` is a sentence naming the facts behind
    a status that is not ok (floor, possible CPUs, aio-max-nr numbers, errno).
    ``source`` says where an ok nr_req came from: ``confirmed`` (observed this
    boot, no probe), ``stored`` (the image's value, probed), ``model`` (the
    model's guess, probed) or ``converged`` (search). ``needed`` is, for BUDGET,
    the smallest nr_req that could give the ring.
    """

    ring_len: int
    nr_req: int
    status: Status
    probes: int = 0
    reason: str = ""
    smallest_ring_len: int = 0
    possible_cpus: int = 0
    source: str = ""
    needed: int = 0

    @property
    def ok(self) -> bool:
        """An nr_req recreating the ring was found (FINE or REWRITE)."""
        return self.status is FINE or self.status is REWRITE
