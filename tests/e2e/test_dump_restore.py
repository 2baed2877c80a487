"""Real dump and restore of processes holding AIO rings, with the real CRIU 4.x.

Each test starts holder processes (criu_aio_plugin/demo/holder.c), dumps them with
`criu dump`, restores them with `criu restore -d` and has the restored processes
check their own rings (restore_and_verify): same addresses, ring_len, nr,
head/tail, pending events readable with their data, new I/O through the rings.
"""

from __future__ import annotations

import pytest
from testbed.harness import (
    PAGE,
    Checkpoint,
    Criu,
    PyCriu,
    RingSpec,
    criu_nr_req,
    n_for_pages,
    ring_pages_for,
)

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


@pytest.mark.parametrize("pages", [1, 2, 3, 5, 8])
def test_ring_of_several_pages_survives_dump_and_restore(
    checkpoint, restore_and_verify, pages: int
) -> None:
    n = n_for_pages(pages)
    cp: Checkpoint = checkpoint([n])
    ring = cp.before["root"].rings[0]
    # The kernel's ring for n is `pages` pages unless this host's smallest ring is larger.
    assert ring.ring_len == ring_pages_for(n) * PAGE
    assert ring.ring_len >= pages * PAGE
    restored = restore_and_verify(cp)
    assert restored.after["root"].rings[0].ring_len == ring.ring_len


def test_several_rings_with_pending_events(checkpoint, restore_and_verify) -> None:
    rings = [
        RingSpec(1, 1),
        RingSpec(n_for_pages(2), 3),
        RingSpec(n_for_pages(3), 7),
        RingSpec(n_for_pages(5), 20),
        RingSpec(n_for_pages(2)),
    ]
    cp: Checkpoint = checkpoint(rings)
    dumped = cp.before["root"].rings
    assert [r.unreaped for r in dumped] == [1, 3, 7, 20, 0]
    assert all(r.head != r.tail for r in dumped[:4])
    restored = restore_and_verify(cp)
    reaped = [r.exercise.reaped for r in restored.exercised["root"].rings if r.exercise]
    assert reaped == [1, 3, 7, 20, 0]


def test_process_tree_with_rings(checkpoint, restore_and_verify) -> None:
    rings = [RingSpec(n_for_pages(2), 2), RingSpec(n_for_pages(3)), RingSpec(1, 1)]
    cp: Checkpoint = checkpoint(rings, children=2, grandchildren=1)
    assert sorted(cp.before) == ["c0", "c0g0", "c1", "c1g0", "root"]
    restored = restore_and_verify(cp)
    pids = {name: rep.pid for name, rep in restored.after.items()}
    # CRIU rebuilt the same tree: same pids, same parents, one session.
    for name, rep in restored.after.items():
        if name != "root":
            parent = name[:-2] if "g" in name else "root"
            assert rep.ppid == pids[parent], f"{name}: parent {rep.ppid} != {pids[parent]}"
        assert rep.sid == pids["root"]


def test_static_holder_survives(checkpoint, restore_and_verify) -> None:
    # The static build is the one containers use (no libc in their rootfs).
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(3), 4)], static=True)
    assert cp.holder.binary.name == "holder-static"
    restore_and_verify(cp)


def test_dumped_nr_req_is_criu_formula(checkpoint, pycriu: PyCriu) -> None:
    # What CRIU 4.x writes, read back with Debian's pycriu: one aio_ring_entry per
    # ring, id = ring address, ring_len = the mapping, nr_req = (k - 2) / 2.
    rings = [1, n_for_pages(2), n_for_pages(3), n_for_pages(5)]
    cp: Checkpoint = checkpoint(rings, children=1)
    for name, rep in cp.before.items():
        entries = {a["id"]: a for a in pycriu.aios(cp.mm_image(name))}
        assert set(entries) == {r.address for r in rep.rings}, name
        for ring in rep.rings:
            entry = entries[ring.address]
            assert entry["ring_len"] == ring.ring_len
            assert entry["nr_req"] == criu_nr_req(ring.ring_len)


def test_dump_and_restore_times_are_recorded(checkpoint, criu: Criu, restore_and_verify) -> None:
    # Not a timing assertion (benchmarks/ has those): the runs carry their
    # durations and logs, which other tests and benchmarks read.
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(2), 1)])
    assert cp.dump.seconds > 0
    assert "Dumping finished successfully" in cp.dump.log_text()
    restored = restore_and_verify(cp)
    assert restored.run.seconds > 0
    assert "Restore finished successfully" in restored.run.log_text()
    assert restored.run.argv[0] == criu.path
