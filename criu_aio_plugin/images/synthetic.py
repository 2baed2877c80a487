"""Plausible mm images built in memory, for tests and benchmarks.

Real checkpoints come from the real CRIU (tests/conftest.py); these stand in
where thousands of images or hand-placed defects are needed. The layout copies
what CRIU writes: code, heap, libraries, stack and vdso VMAs, an auxv vector,
and one ``aios`` entry per ring with CRIU's dump-side nr_req.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from criu_aio_plugin._proto import criu_aio_mm_pb2
from criu_aio_plugin.images import codec
from criu_aio_plugin.kernel.arithmetic import criu_formula

PAGE = 4096
_VMA_AREA_REGULAR = 1  # CRIU's VMA_AREA_REGULAR status bit
_VMA_AREA_AIORING = 1 << 13  # CRIU's VMA_AREA_AIORING status bit


@dataclass(frozen=True)
class SynthRing:
    ring_id: int
    ring_len: int
    nr_req: int


def rings_for(pages: Sequence[int], base: int = 0x7F00_0000_0000) -> list[SynthRing]:
    """Rings of the given page counts at distinct addresses, with CRIU's nr_req."""
    out = []
    addr = base
    for p in pages:
        out.append(SynthRing(addr, p * PAGE, criu_formula(p * PAGE)))
        addr += (p + 16) * PAGE
    return out


def mm_entry(
    rings: Sequence[SynthRing], n_vmas: int = 40, seed: int = 0
) -> criu_aio_mm_pb2.mm_entry:
    """An mm_entry with ``n_vmas`` VMAs (the rings' own VMAs included)."""
    rnd = random.Random(seed)
    e = criu_aio_mm_pb2.mm_entry(
        mm_start_code=0x55_5555_4000,
        mm_end_code=0x55_5555_9000,
        mm_start_data=0x55_5555_B000,
        mm_end_data=0x55_5555_C000,
        mm_start_stack=0x7FFF_FFFD_E000,
        mm_start_brk=0x55_5556_0000,
        mm_brk=0x55_5558_1000,
        mm_arg_start=0x7FFF_FFFF_E000,
        mm_arg_end=0x7FFF_FFFF_E020,
        mm_env_start=0x7FFF_FFFF_E020,
        mm_env_end=0x7FFF_FFFF_EFE0,
        exe_file_id=rnd.randrange(1, 1000),
        dumpable=1,
    )
    e.mm_saved_auxv.extend(rnd.randrange(0, 1 << 48) for _ in range(38))
    ring_vmas = [(r.ring_id, r.ring_id + r.ring_len) for r in rings]
    addr = 0x7F10_0000_0000
    for i in range(max(0, n_vmas - len(rings))):
        length = rnd.choice((1, 1, 2, 4, 16, 256)) * PAGE
        e.vmas.add(
            start=addr,
            end=addr + length,
            pgoff=rnd.choice((0, 0, 4096 * i)),
            shmid=rnd.randrange(0, 1 << 20),
            prot=rnd.choice((1, 3, 5)),
            flags=rnd.choice((0x2, 0x22, 0x802)),
            status=_VMA_AREA_REGULAR | rnd.choice((0, 2, 0x40)),
            fd=-1,
            madv=rnd.choice((0, 0, 1 << 14)),
        )
        addr += length + PAGE
    for start, end in ring_vmas:
        e.vmas.add(
            start=start,
            end=end,
            pgoff=0,
            shmid=rnd.randrange(1, 1 << 20),
            prot=3,
            flags=0x1,
            status=_VMA_AREA_REGULAR | _VMA_AREA_AIORING,
            fd=-1,
        )
    for r in rings:
        e.aios.add(id=r.ring_id, nr_req=r.nr_req, ring_len=r.ring_len)
    e.thp_disabled = False
    return e


def mm_image_bytes(rings: Sequence[SynthRing], n_vmas: int = 40, seed: int = 0) -> bytes:
    """The bytes of an mm-<pid>.img holding ``rings``."""
    return codec.dumps(codec.Image(codec.MM_MAGIC, [mm_entry(rings, n_vmas, seed)]))
