"""The bug criu-aio exists for, reproduced with the real CRIU and Debian's pycriu.

A checkpoint whose aio_ring_entry.nr_req is not the one CRIU 4.x's formula
gives, e.g. k - 2 instead of (k - 2) / 2 as another CRIU build writes it (k =
slots in the ring), makes the restorer's io_setup(nr_req) create a ring of
another size; CRIU then aborts the whole restore with "wrong aio", after it had
already rebuilt part of the tree. The images are edited with Debian's pycriu
(load, change nr_req, dump), a tool independent of criu-aio.
"""

from __future__ import annotations

import re

import pytest
from testbed.harness import (
    Checkpoint,
    Criu,
    PyCriu,
    RingSpec,
    n_for_pages,
    other_build_nr_req,
    processes_with_rings,
    wait_gone,
)

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

# e.g. "pie: 1234: Error (criu/pie/restorer.c:950): wrong aio: tail=0x0 head=0x0
#       req=0xc8 old_nr=0xff new_nr=0x1ff expect=0xff"
WRONG_AIO = re.compile(
    r"(?:pie: (?P<pid>\d+): )?Error \(criu/pie/restorer\.c:\d+\): wrong aio: "
    r"tail=0x(?P<tail>[0-9a-f]+) head=0x(?P<head>[0-9a-f]+) req=0x(?P<req>[0-9a-f]+) "
    r"old_nr=0x(?P<old_nr>[0-9a-f]+) new_nr=0x(?P<new_nr>[0-9a-f]+)"
)


@pytest.mark.parametrize(
    ("children", "grandchildren", "forged"),
    [(0, 0, "root"), (2, 1, "c1g0")],
    ids=["single-process", "tree-forged-grandchild"],
)
def test_other_builds_nr_req_fails_plain_criu_restore(
    checkpoint,
    criu: Criu,
    pycriu: PyCriu,
    children: int,
    grandchildren: int,
    forged: str,
) -> None:
    rings = [RingSpec(n_for_pages(2), 2), RingSpec(n_for_pages(3)), RingSpec(n_for_pages(5), 1)]
    cp: Checkpoint = checkpoint(rings, children=children, grandchildren=grandchildren)
    mm = cp.mm_image(forged)

    # Forge: the same checkpoint with the nr_req the other build writes.
    dumped = pycriu.aios(mm)
    assert {a["id"] for a in dumped} == {r.address for r in cp.before[forged].rings}
    forged_nr = {a["id"]: other_build_nr_req(a["ring_len"]) for a in dumped}
    for a in dumped:
        assert forged_nr[a["id"]] != a["nr_req"]
    pycriu.set_nr_req(mm, forged_nr)
    assert {a["id"]: a["nr_req"] for a in pycriu.aios(mm)} == forged_nr

    pidfile = cp.images_dir.parent / "restore.pid"
    # Any process mapping a ring at a dumped address already (none expected: the
    # dumped tree is gone) is not the restore's doing.
    unrelated = set(processes_with_rings(cp.addresses))
    run = criu.restore(cp.images_dir, pidfile)

    assert not run.ok, "plain CRIU restored a checkpoint whose nr_req cannot reproduce its rings"
    log = run.log_text()
    match = WRONG_AIO.search(log)
    assert match is not None, f"no `wrong aio` error in {run.log}:\n{run.tail()}"
    # The failing ring is one we forged: CRIU asked for our nr_req and got a
    # ring of another size than the dumped one.
    nr_by_req = {forged_nr[r.address]: r.nr for r in cp.before[forged].rings}
    req, old_nr, new_nr = (int(match[g], 16) for g in ("req", "old_nr", "new_nr"))
    assert req in nr_by_req, f"wrong aio for req={req}, forged {sorted(nr_by_req)}"
    assert old_nr == nr_by_req[req]
    assert new_nr != old_nr
    assert "Restoring FAILED" in log
    if match["pid"] is not None:
        assert int(match["pid"]) == cp.before[forged].pid, "wrong aio in another process"
    # CRIU had rebuilt the whole tree before the restorer hit the forged ring.
    assert len(re.findall(r"Forking task with \d+ pid", log)) == len(cp.before)

    # Nothing survives: no dumped pid exists (not even as a zombie), and no
    # process (holder or half-restored CRIU task) maps a ring at a dumped address.
    pids = list(cp.holder.pids.values())
    assert wait_gone(pids) == [], "processes of the failed restore are still there"
    left = {p: a for p, a in processes_with_rings(cp.addresses).items() if p not in unrelated}
    assert left == {}, f"processes still map the checkpoint's rings: {left}"
    assert not pidfile.exists() or pidfile.read_text().strip() == ""


def test_unforged_checkpoint_restores(checkpoint, restore_and_verify, pycriu: PyCriu) -> None:
    # The control: the same kind of checkpoint, untouched (only decoded and
    # re-encoded by pycriu, byte-identical), restores and works.
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(2), 2), RingSpec(n_for_pages(3))])
    mm = cp.mm_image()
    raw = mm.read_bytes()
    pycriu.set_nr_req(mm, {a["id"]: a["nr_req"] for a in pycriu.aios(mm)})
    assert mm.read_bytes() == raw
    restore_and_verify(cp)
