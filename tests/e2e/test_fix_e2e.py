"""`criu-aio fix` end to end with the real CRIU and real AIO rings.

The checkpoint carries the nr_req another CRIU build would write (k - 2
instead of (k - 2) / 2). Plain CRIU must fail to restore it with its `wrong
aio` error; after `criu-aio fix`, plain CRIU restores it and the restored tree's
rings are intact (the test bed's verification: addresses, nr, head/tail,
pending events, new I/O). Debian's pycriu must read every fixed image and see
only nr_req changed; `--revert` must give back the exact bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from images_helpers import criu_aio, mm_images, pycriu_decode, without_nr_req
from testbed.harness import PAGE, PyCriu, RingSpec, n_for_pages, ring_pages_for, wait_gone

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.images import codec, mm

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def _break_nr_req(pycriu: PyCriu, images: Path) -> dict[Path, dict[int, int]]:
    """Write k - 2 into every ring of every mm image, through pycriu's own encoder."""
    broken: dict[Path, dict[int, int]] = {}
    for img in mm_images(images):
        changes = {
            r["id"]: (r["ring_len"] - 32) // 32 - 2 for r in pycriu.aios(img) if r["ring_len"]
        }
        if changes:
            pycriu.set_nr_req(img, changes)
            broken[img] = changes
    return broken


def test_fix_makes_a_wrong_nr_req_checkpoint_restorable(
    checkpoint: Any, criu: Any, pycriu: PyCriu, restore_and_verify: Any
) -> None:
    rings = [n_for_pages(1), RingSpec(n_for_pages(2), pending=3), n_for_pages(4)]
    cp = checkpoint(rings, children=1)
    broken = _break_nr_req(pycriu, cp.images_dir)
    assert len(broken) == 2  # the root and its child each hold the rings

    # Plain CRIU fails on it, with its restorer's check.
    failed = criu.restore(cp.images_dir, cp.images_dir.parent / "fail.pid")
    assert not failed.ok
    assert "wrong aio" in failed.log_text()
    # The failed tree's processes are reaped (pytest is their subreaper) so
    # that their pids are free for the restore after the fix.
    assert wait_gone(list(cp.holder.pids.values())) == []

    before_bytes = {p: p.read_bytes() for p in mm_images(cp.images_dir)}
    before_decoded = pycriu_decode(pycriu, list(before_bytes))

    dry = criu_aio("fix", str(cp.images_dir), "--dry-run", "--json")
    assert dry.returncode == exitcodes.FIXABLE, dry.stderr
    assert not json.loads(dry.stdout)["fix"]["written"]
    assert {p: p.read_bytes() for p in before_bytes} == before_bytes

    fixed = criu_aio("fix", str(cp.images_dir), "--json")
    assert fixed.returncode == exitcodes.OK, fixed.stderr  # so `fix && criu restore` restores
    doc = json.loads(fixed.stdout)["fix"]
    assert doc["written"] and len(doc["changes"]) == 3 * 2
    for change in doc["changes"]:
        # The new value recreates the dumped ring here (test bed's own arithmetic).
        assert ring_pages_for(change["new_nr_req"]) * PAGE == change["ring_len"]

    # pycriu reads every fixed image and sees only nr_req changed.
    after_decoded = pycriu_decode(pycriu, list(before_bytes))
    for path, before in before_decoded.items():
        after = after_decoded[path]
        assert without_nr_req(after) == without_nr_req(before)
        for ring in after["entries"][0]["aios"]:
            assert ring_pages_for(ring["nr_req"]) * PAGE == ring["ring_len"]
    # ... and our codec agrees with itself byte for byte on them.
    for p in before_bytes:
        data = p.read_bytes()
        assert codec.dumps(codec.loads(data)) == data

    again = criu_aio("fix", str(cp.images_dir))
    assert again.returncode == exitcodes.OK, again.stdout + again.stderr

    # A snapshot to test --revert on once the restore has consumed nothing.
    snapshot = cp.images_dir.parent / "fixed-copy"
    shutil.copytree(cp.images_dir, snapshot, symlinks=True)

    restore_and_verify(cp)

    reverted = criu_aio("fix", str(snapshot), "--revert")
    assert reverted.returncode == exitcodes.OK, reverted.stderr
    assert f"restored {len(before_bytes)} image(s)" in reverted.stdout
    for p, data in before_bytes.items():
        assert (snapshot / p.name).read_bytes() == data


def test_inspect_reports_every_ring_of_a_real_dump(checkpoint: Any, pycriu: PyCriu) -> None:
    cp = checkpoint([n_for_pages(1), n_for_pages(3)], children=1, grandchildren=1)
    res = criu_aio("inspect", str(cp.images_dir), "--json")
    assert res.returncode == exitcodes.OK, res.stderr
    doc = json.loads(res.stdout)
    seen = {(r["pid"], int(r["ring"], 16)): r for r in doc["rings"]}
    expected = {
        (rep.pid, ring.address): ring.ring_len for rep in cp.before.values() for ring in rep.rings
    }
    assert {k: v["ring_len"] for k, v in seen.items()} == expected
    assert all(r["status"] == "fine" for r in doc["rings"])
    assert doc["schema"] == "criu-aio/verdict" and doc["decision"] == "fine"
    assert len(mm.read_rings(cp.images_dir)) == len(expected)
