"""The model: a checkpoint's rings judged on one kernel (frozen values, lean core)."""

from __future__ import annotations

from criu_aio_plugin.status import BUDGET, FINE, REWRITE, Status, worst
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.mm import ImageRing
    from criu_aio_plugin.kernel.interface import HostFacts


class RingVerdict(Value):
    """One ring of a checkpoint on one kernel.

    ``status`` is FINE (the stored nr_req recreates it), REWRITE (``nr_req``
    does), BUDGET, IMPOSSIBLE or ERROR. ``nr_req`` is the value a restore here
    uses (0 when there is none); ``needed`` is, for BUDGET, the least nr_req
    that could give the ring; ``reason`` names the host fact behind a status
    that is not restorable; ``source`` says where ``nr_req`` came from
    (confirmed this boot, stored, model, converged).
    """

    ring: ImageRing
    status: Status
    nr_req: int = 0
    reason: str = ""
    smallest_ring_len: int = 0
    needed: int = 0
    source: str = ""

    @property
    def charge(self) -> int:
        """What this ring adds to fs.aio-nr on restore (the least it would need for BUDGET)."""
        if self.status.restorable:
            return self.nr_req
        return self.needed if self.status is BUDGET else 0

    @property
    def label(self) -> str:
        """``ring 0x7f.. in mm-12.img (8192 bytes, 2 pages, nr_req 255)``."""
        r = self.ring
        pages = f", {r.ring_len // 4096} pages" if r.ring_len % 4096 == 0 else ""
        return f"ring {r.ring_id:#x} in {r.file} ({r.ring_len} bytes{pages}, nr_req {r.nr_req})"


class Judgement(Value):
    """Every ring of one checkpoint judged on one kernel, and the AIO budget.

    ``budget_needed`` is what restoring the rings adds to fs.aio-nr (the sum of
    the chosen nr_req, and the least that rings refused for budget need);
    ``headroom`` is fs.aio-max-nr minus fs.aio-nr when judged (after our own
    probes are gone). ``checkpoint`` names what was judged, for messages.
    """

    checkpoint: str
    kernel: str
    live: bool
    host: HostFacts
    rings: tuple[RingVerdict, ...]
    budget_needed: int
    headroom: int
    probes: int = 0
    teardown_wait: float = 0.0

    @property
    def over_budget(self) -> bool:
        return self.budget_needed > self.headroom

    @property
    def status(self) -> Status:
        """The checkpoint's status: its worst ring's, BUDGET at least when over budget."""
        found = worst((r.status for r in self.rings), default=FINE)
        if self.over_budget and found.severity < BUDGET.severity:
            return BUDGET
        return found

    def rings_with(self, *statuses: Status) -> list[RingVerdict]:
        return [r for r in self.rings if r.status in statuses]

    @property
    def rewrites(self) -> dict[tuple[str, int], int]:
        """(mm image file name, ring id) -> new nr_req for every REWRITE ring."""
        return {(r.ring.file, r.ring.ring_id): r.nr_req for r in self.rings if r.status is REWRITE}
