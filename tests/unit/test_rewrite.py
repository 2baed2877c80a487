"""The transactional rewrite: journal, recovery, idempotence, revert, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import journal, mm, rewrite, splice, synthetic

IS_ROOT = os.geteuid() == 0


def _checkpoint(d: Path, pids: tuple[int, ...] = (1, 2, 3)) -> dict[str, bytes]:
    d.mkdir(exist_ok=True)
    out = {}
    for pid in pids:
        data = synthetic.mm_image_bytes(synthetic.rings_for([1, 2, 4]), 60, pid)
        (d / f"mm-{pid}.img").write_bytes(data)
        out[f"mm-{pid}.img"] = data
    return out


def _wanted(d: Path) -> dict[tuple[str, int], int]:
    return {(r.file, r.ring_id): r.nr_req // 2 + 1 for r in mm.read_rings(d)}


def _images(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("mm-*.img"))}


def test_fix_is_idempotent_and_journaled(tmp_path: Path) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d)
    wanted = _wanted(d)
    first = rewrite.apply_fix(d, wanted, kernel_name="test")
    assert first.written and len(first.changes) == 9
    fixed = _images(d)
    assert {(r.file, r.ring_id): r.nr_req for r in mm.read_rings(d)} == wanted
    second = rewrite.apply_fix(d, wanted)
    assert not second.written and second.changes == ()
    assert _images(d) == fixed
    doc = json.loads((d / journal.JOURNAL_NAME).read_text())
    assert doc["pending"] is None
    assert [h["action"] for h in doc["history"]] == ["fix"]
    assert sorted(doc["originals"]) == sorted(original)
    for name, orig in doc["originals"].items():
        assert orig["sha256"] == rewrite.sha256(original[name])
        assert orig["current_sha256"] == rewrite.sha256(fixed[name])
    # only the nr_req bytes moved: same length images (small varints) and same rest
    for name in original:
        assert mm.parse_mm(fixed[name], name, 0) != mm.parse_mm(original[name], name, 0)


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d)
    listing = sorted(os.listdir(d))
    result = rewrite.apply_fix(d, _wanted(d), dry_run=True)
    assert not result.written and len(result.changes) == 9
    assert _images(d) == original and sorted(os.listdir(d)) == listing


def test_two_fixes_then_revert_restores_the_very_first_bytes(tmp_path: Path) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d)
    rewrite.apply_fix(d, _wanted(d))
    rewrite.apply_fix(d, {(r.file, r.ring_id): r.nr_req + 7 for r in mm.read_rings(d)})
    result = rewrite.revert(d)
    assert result.written and len(result.changes) == 9
    assert _images(d) == original
    assert not rewrite.revert(d).written  # twice: no-op
    doc = json.loads((d / journal.JOURNAL_NAME).read_text())
    assert [h["action"] for h in doc["history"]] == ["fix", "fix", "revert"]
    assert doc["originals"] == {}


def test_revert_refuses_a_file_replaced_since(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _checkpoint(d)
    rewrite.apply_fix(d, _wanted(d))
    fresh = synthetic.mm_image_bytes(synthetic.rings_for([3]), 20, 99)
    (d / "mm-2.img").write_bytes(fresh)  # a new dump over the old one
    before = _images(d)
    with pytest.raises(ImageError, match="changed since criu-aio rewrote it") as exc:
        rewrite.revert(d)
    assert exc.value.path == str(d / "mm-2.img")
    assert _images(d) == before
    # A fix now treats the new file as an original of its own.
    ring = mm.read_rings(d)
    rewrite.apply_fix(d, {(r.file, r.ring_id): r.nr_req + 1 for r in ring if r.file == "mm-2.img"})
    doc = json.loads((d / journal.JOURNAL_NAME).read_text())
    assert doc["originals"]["mm-2.img"]["sha256"] == rewrite.sha256(fresh)


@pytest.mark.skipif(not IS_ROOT, reason="chown to another owner needs root (CI runs as root)")
def test_mode_and_owner_are_kept(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _checkpoint(d)
    os.chmod(d / "mm-1.img", 0o640)
    os.chown(d / "mm-1.img", 1234, 5678)
    rewrite.apply_fix(d, _wanted(d))
    st = os.stat(d / "mm-1.img")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_failure_before_renames_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d)
    listing = sorted(os.listdir(d))

    def boom(*args: object, **kwargs: object) -> None:
        raise ImageError("injected journal failure", path="x")

    monkeypatch.setattr(journal, "store", boom)
    with pytest.raises(ImageError, match="injected"):
        rewrite.apply_fix(d, _wanted(d))
    assert _images(d) == original
    assert sorted(os.listdir(d)) == listing


def _crash_after_journal(d: Path, renamed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a fix that 'dies' after ``renamed`` image renames (journal pending on disk).

    The renames of a fix are: journal (pending), each image, journal (done);
    dying at the last one leaves every image new and the journal pending.
    """
    real_rename = os.rename
    count = 0

    class Died(BaseException):
        pass

    def rename(src: str, dst: str, **kw: int) -> None:
        nonlocal count
        if count == renamed + 1:
            raise Died
        count += 1
        real_rename(src, dst, **kw)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(Died):
        rewrite.apply_fix(d, _wanted(d))
    monkeypatch.setattr(os, "rename", real_rename)


@pytest.mark.parametrize("renamed", [0, 1, 2, 3])
def test_roll_forward_after_a_crash_mid_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renamed: int
) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d)
    wanted = _wanted(d)
    _crash_after_journal(d, renamed, monkeypatch)
    doc = json.loads((d / journal.JOURNAL_NAME).read_text())
    assert doc["pending"] is not None
    # Each image is whole: old or new.
    for name, data in _images(d).items():
        assert data == original[name] or mm.parse_mm(data, name, 0)
    result = rewrite.apply_fix(d, wanted)
    assert len(result.recovered) == 3
    assert not result.written  # the recovery already did the work
    assert {(r.file, r.ring_id): r.nr_req for r in mm.read_rings(d)} == wanted
    assert not [n for n in os.listdir(d) if n.startswith(journal.TMP_PREFIX)]
    assert json.loads((d / journal.JOURNAL_NAME).read_text())["pending"] is None
    rewrite.revert(d)
    assert _images(d) == original


def test_roll_forward_rebuilds_a_lost_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d)
    wanted = _wanted(d)
    _crash_after_journal(d, 1, monkeypatch)
    for name in os.listdir(d):
        if name.startswith(journal.TMP_PREFIX + "mm-"):
            os.unlink(d / name)  # someone cleaned up temps by hand
    rewrite.recover(os.open(d, os.O_RDONLY), str(d))
    assert {(r.file, r.ring_id): r.nr_req for r in mm.read_rings(d)} == wanted
    rewrite.revert(d)
    assert _images(d) == original


def test_stale_temps_are_removed_under_the_lock(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _checkpoint(d)
    (d / (journal.TMP_PREFIX + "mm-1.img")).write_bytes(b"half written")
    result = rewrite.apply_fix(d, _wanted(d))
    assert any("stale" in line for line in result.recovered)
    assert not [n for n in os.listdir(d) if n.startswith(journal.TMP_PREFIX)]


def test_dir_fd_is_borrowed_not_closed(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _checkpoint(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rings = mm.read_rings(fd)
        result = rewrite.apply_fix(fd, {(r.file, r.ring_id): r.nr_req + 1 for r in rings})
        assert result.written
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_journal_round_trip() -> None:
    jr = journal.Journal(
        {"mm-1.img": journal.FileOriginal("a" * 64, "b" * 64, {0x1000: b"\x08\x01"})},
        [{"action": "fix"}],
        journal.Pending(
            "tx",
            "fix",
            (journal.PendingFile("mm-1.img", ".criu-aio-tmp.mm-1.img", "a", "b", {1: 5, 2: b"x"}),),
        ),
    )
    assert journal.from_json(json.loads(journal.encode(jr))) == jr


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"format": "other", "version": 1},
        {"format": journal.FORMAT, "version": 99, "originals": {}, "history": []},
        {
            "format": journal.FORMAT,
            "version": 1,
            "originals": {},
            "history": [],
            "pending": {
                "txid": "t",
                "action": "fix",
                "files": [
                    {
                        "file": "../escape",
                        "tmp": "../x",
                        "old_sha256": "",
                        "new_sha256": "",
                        "changes": {},
                    }
                ],
            },
        },
    ],
)
def test_bad_journal_documents(doc: object) -> None:
    with pytest.raises(ValueError):
        journal.from_json(doc)


def _concurrent_fix(
    d: str, wanted: dict[tuple[str, int], int], q: multiprocessing.Queue[int]
) -> None:
    q.put(len(rewrite.apply_fix(d, wanted).changes))


def test_eight_concurrent_runs_end_consistent(tmp_path: Path) -> None:
    d = tmp_path / "c"
    original = _checkpoint(d, tuple(range(1, 21)))
    wanted = _wanted(d)
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_fix, args=(str(d), wanted, q)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    counts = sorted(q.get() for _ in procs)
    assert counts == [0] * 7 + [len(wanted)]  # exactly one run changed anything
    assert {(r.file, r.ring_id): r.nr_req for r in mm.read_rings(d)} == wanted
    doc = json.loads((d / journal.JOURNAL_NAME).read_text())
    assert [h["action"] for h in doc["history"]] == ["fix"]
    rewrite.revert(d)
    assert _images(d) == original


def test_splice_rejects_unknown_ring() -> None:
    data = synthetic.mm_image_bytes(synthetic.rings_for([1]), 10)
    with pytest.raises(ImageError, match="no ring at 0x5000"):
        splice.splice(data, "x", {0x5000: 3})


def test_dry_run_reports_an_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from criu_aio_plugin.decision.checkpoint import Session
    from criu_aio_plugin.kernel.select import kernel_from_spec

    d = tmp_path / "c"
    _checkpoint(d)
    _crash_after_journal(d, 1, monkeypatch)
    before = _images(d)
    with Session(d, write=False) as cp:
        result = cp.examine(kernel_from_spec("sim:x86-2"))
    assert result.pending and not result.written
    assert _images(d) == before  # a dry run does not complete it
