"""Values the estimator returns (shared with the image tools and the interposer)."""

from __future__ import annotations

from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar


class Verdict:
    """What the estimator concluded for one ring on one kernel.

    An enumeration of four singletons compared with ``is`` (``name`` and
    ``value`` as enum members have), written without the enum module: enum
    (and functools, collections behind it) would cost ~2 ms on ``criu-aio
    swrk``'s restore path.
    """

    __slots__ = ("name", "value")
    EXACT: ClassVar[Verdict]  # nr_req reproduces the ring exactly
    IMPOSSIBLE: ClassVar[Verdict]  # no nr_req can: the ring is below this host's smallest ring
    BUDGET: ClassVar[Verdict]  # fs.aio-max-nr cannot hold it (now)
    ERROR: ClassVar[Verdict]  # the kernel refused in a way we did not expect

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def __repr__(self) -> str:
        return f"<Verdict.{self.name}: {self.value!r}>"

    def __reduce__(self) -> str:
        return f"Verdict.{self.name}"  # copies and pickles are the member itself


Verdict.EXACT = Verdict("EXACT", "exact")
Verdict.IMPOSSIBLE = Verdict("IMPOSSIBLE", "impossible")
Verdict.BUDGET = Verdict("BUDGET", "budget")
Verdict.ERROR = Verdict("ERROR", "error")


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

    ring_len: int
    nr_req: int
    verdict: Verdict
    probes: int = 0
    reason: str = ""
    smallest_ring_len: int = 0
    possible_cpus: int = 0
    source: str = ""
    needed: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.EXACT
