"""How a kernel turns io_setup(nr_events) into a ring: the pure arithmetic.

Modern kernels (fs/aio.c, ioctx_alloc() and aio_setup_ring(), since v3.11):

    nr_events = max(nr_events, 4 * num_possible_cpus())   # per-CPU floor
    nr_events *= 2                                         # the doubling
    slots     = nr_events + 2                              # +2 for the head/tail gap
    pages     = ceil((32 + 32 * slots) / PAGE_SIZE)        # header + io_events
    ring nr   = (pages * PAGE_SIZE - 32) / 32              # what the header says

v3.10 had neither the doubling nor the floor. CRIU's dump side writes
nr_req = (k - 2) / 2 with k = (ring_len - 32) / 32 (criu/aio.c), i.e. it inverts
exactly the modern arithmetic without the floor. The restorer
(criu/pie/restorer.c) then requires the new ring's header nr to equal the old one.
"""

from __future__ import annotations

from criu_aio_plugin.values import Value

AIO_RING_HEADER = 32  # struct aio_ring: id, nr, head, tail, magic, compat, incompat, header_length
IO_EVENT_SIZE = 32  # struct io_event: data, obj, res, res2
AIO_RING_MAGIC = 0xA10A10A1


def slots_for_len(ring_len: int, header: int = AIO_RING_HEADER, event: int = IO_EVENT_SIZE) -> int:
    """The header ``nr`` of a ring of ``ring_len`` bytes (CRIU's ``k``)."""
    return (ring_len - header) // event


def criu_formula(ring_len: int) -> int:
    """The nr_req CRIU writes at dump for a ring of ``ring_len`` bytes."""
    k = slots_for_len(ring_len)
    return (k - 2) // 2


class RingArithmetic(Value):
    """Parameters of one kernel's ring sizing (see the module docstring).

    A frozen value (``criu_aio_plugin.values``).
    """

    page_size: int = 4096
    doubling: bool = True
    possible_cpus: int = 1
    floor_per_cpu: int = 4  # 0 disables the floor (v3.10)
    header: int = AIO_RING_HEADER
    event: int = IO_EVENT_SIZE
    extra_slots: int = 2

    @property
    def floor(self) -> int:
        """The smallest nr_events the kernel works with, before doubling."""
        return self.floor_per_cpu * self.possible_cpus

    def effective_events(self, nr_req: int) -> int:
        """The count fs.aio-nr is charged and the ring is built for (after floor/doubling)."""
        n = max(nr_req, self.floor)
        return n * 2 if self.doubling else n

    def ring_pages(self, nr_req: int) -> int:
        slots = self.effective_events(nr_req) + self.extra_slots
        size = self.header + self.event * slots
        return -(-size // self.page_size)

    def ring_len(self, nr_req: int) -> int:
        """Bytes of the ring io_setup(nr_req) maps."""
        return self.ring_pages(nr_req) * self.page_size

    def ring_nr(self, nr_req: int) -> int:
        """The header ``nr`` of the ring io_setup(nr_req) creates."""
        return (self.ring_len(nr_req) - self.header) // self.event

    @property
    def smallest_ring_len(self) -> int:
        """The smallest ring this kernel can create (io_setup(1))."""
        return self.ring_len(1)
