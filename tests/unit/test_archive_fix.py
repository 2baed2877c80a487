"""fix and revert of checkpoint archives: exact bytes, atomicity, journal, refusals."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import resource
import shutil
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backports import zstd
from testbed import archives

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import mm, rewrite
from criu_aio_plugin.images.archive import (
    Compression,
    fix_archive,
    read_archive,
    revert_archive,
    transaction,
)
from criu_aio_plugin.images.archive import journal as ajournal

RINGS = {101: [1, 3], 102: [2], 103: [1, 1, 8]}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return archives.synthetic_images(tmp_path / "images", RINGS, pages=64 * 4096)


def tar_stream(path: Path) -> bytes:
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return zstd.decompress(data)
    return data


def wanted(images: Path) -> dict[tuple[str, int], int]:
    # Halve every nr_req, and push one past a varint boundary (62 -> 200: the
    # mm image grows by a byte, so the member's size field changes).
    out = {(r.file, r.ring_id): r.nr_req // 2 + 1 for r in mm.read_rings(images)}
    first = next(iter(sorted(out)))
    out[first] = 200
    return out


def directory_fix(images: Path, tmp: Path, want: dict[tuple[str, int], int]) -> dict[str, bytes]:
    """The mm images the directory rewrite makes for the same request."""
    copy = tmp / "dir-fixed"
    shutil.copytree(images, copy)
    rewrite.apply_fix(copy, want)
    return {p.name: p.read_bytes() for p in copy.glob("mm-*.img")}


def members(stream: bytes, tmp: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    path = tmp / "stream.tar"
    path.write_bytes(stream)
    with tarfile.open(path) as tf:
        return [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf]  # type: ignore[union-attr]


def assert_only_mm_changed(old: bytes, new: bytes, fixed_mm: dict[str, bytes], tmp: Path) -> None:
    """Every member identical (header fields and data) except the mm images named."""
    before, after = members(old, tmp), members(new, tmp)
    assert [m.name for m, _ in before] == [m.name for m, _ in after]
    for (a, da), (b, db) in zip(before, after, strict=True):
        base = os.path.basename(a.name)
        same_fields = ("mode", "uid", "gid", "uname", "gname", "mtime", "type", "linkname")
        assert [getattr(a, f) for f in same_fields] == [getattr(b, f) for f in same_fields]
        if base in fixed_mm and a.name.removeprefix("./").startswith("checkpoint/"):
            assert db == fixed_mm[base], a.name
            assert {k: v for k, v in a.pax_headers.items() if k != "size"} == {
                k: v for k, v in b.pax_headers.items() if k != "size"
            }
            raw_a = old[a.offset : a.offset_data]
            raw_b = new[b.offset : b.offset_data]
            if len(raw_a) == len(raw_b) == 512:  # a bare header: only size and chksum differ
                outside = [*range(0, 124), *range(136, 148), *range(156, 512)]
                assert [raw_a[i] for i in outside] == [raw_b[i] for i in outside]
        else:
            assert da == db, a.name
            assert a.pax_headers == b.pax_headers
            assert old[a.offset : a.offset_data] == new[b.offset : b.offset_data], a.name
    # What follows the last member (end-of-archive blocks, record padding) too.
    last_a, last_b = before[-1][0], after[-1][0]
    tail_a = old[last_a.offset_data + -(-last_a.size // 512) * 512 :]
    tail_b = new[last_b.offset_data + -(-last_b.size // 512) * 512 :]
    assert tail_a == tail_b


@pytest.mark.parametrize("tool", ["python", "gnu-tar"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_fix_in_place_changes_only_the_mm_images_and_reverts_exactly(
    images: Path, tmp_path: Path, compression: str, tool: str
) -> None:
    path = archives.podman_archive(images, tmp_path, compression, tool=tool)
    original_file = path.read_bytes()
    original = tar_stream(path)
    want = wanted(images)
    done = fix_archive(path, want)
    assert done.written and done.archive == str(path)
    assert done.journal == f"{path}.criu-aio.journal"
    assert {c.file for c in done.result.changes} == {f for f, _ in want}
    fixed = tar_stream(path)
    assert_only_mm_changed(original, fixed, directory_fix(images, tmp_path, want), tmp_path)
    # Same format, and for gzip the same member header (name, mtime, OS byte).
    assert read_archive(path).compression is Compression(compression)
    if compression == "gzip":
        assert path.read_bytes()[:10] == original_file[:10]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    # The rings now hold what was asked.
    got = {(r.file, r.ring_id): r.nr_req for r in read_archive(path).rings}
    assert got == want
    # Again: nothing to do, nothing written.
    again = fix_archive(path, want)
    assert not again.written and not again.result.changes
    # Revert: the tar stream CRIU's engine wrote, byte for byte (the very file
    # for an uncompressed archive).
    back = revert_archive(path)
    assert back.written and len(back.result.changes) == len(want)
    assert tar_stream(path) == original
    if compression == "none":
        assert path.read_bytes() == original_file
    assert not revert_archive(path).written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_fix_to_output_leaves_the_source_alone(images: Path, tmp_path: Path) -> None:
    src = archives.podman_archive(images, tmp_path, "zstd")
    os.chmod(src, 0o600)
    before = (src.read_bytes(), src.stat().st_mtime_ns)
    out = tmp_path / "out" / "fixed.tar.zst"
    out.parent.mkdir()
    want = wanted(images)
    done = fix_archive(src, want, output=out)
    assert done.written and done.archive == str(out) and done.source == str(src)
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before
    assert not Path(f"{src}.criu-aio.journal").exists()
    assert Path(f"{out}.criu-aio.journal").exists()
    assert out.stat().st_mode & 0o777 == 0o600  # never wider than the original
    assert {(r.file, r.ring_id): r.nr_req for r in read_archive(out).rings} == want
    with pytest.raises(ImageError, match="exists; criu-aio writes --output to a new file only"):
        fix_archive(src, want, output=out)
    # The new archive's journal reverts it to the source's bytes.
    revert_archive(out)
    assert tar_stream(out) == tar_stream(src)
    # A second generation carries the originals along.
    out2 = tmp_path / "out" / "again.tar.zst"
    fix_archive(out, want)
    fix_archive(out, {k: v + 1 for k, v in want.items()}, output=out2)
    revert_archive(out2)
    assert tar_stream(out2) == tar_stream(src)


def test_output_with_nothing_to_fix_is_a_byte_copy(images: Path, tmp_path: Path) -> None:
    src = archives.podman_archive(images, tmp_path, "gzip")
    current = {(r.file, r.ring_id): r.nr_req for r in read_archive(src).rings}
    out = tmp_path / "copy.tar.gz"
    done = fix_archive(src, current, output=out)
    assert done.written and not done.result.changes
    assert out.read_bytes() == src.read_bytes()


def test_dry_run_writes_nothing(images: Path, tmp_path: Path) -> None:
    src = archives.kubelet_archive(images, tmp_path)
    listing = sorted(os.listdir(tmp_path))
    before = (src.read_bytes(), src.stat().st_mtime_ns)
    done = fix_archive(src, wanted(images), dry_run=True)
    assert not done.written and len(done.result.changes) == len(wanted(images))
    assert sorted(os.listdir(tmp_path)) == listing
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before


def test_a_pax_size_record_is_rewritten_with_the_member(images: Path, tmp_path: Path) -> None:
    sound = archives.sound_members(images)
    for info, _ in sound:
        if "/mm-" in info.name:
            info.pax_headers = {"size": str(info.size), "comment": "kept"}
    path = archives.write_tar(tmp_path / "pax.tar", sound)
    original = path.read_bytes()
    want = wanted(images)
    fix_archive(path, want)
    with tarfile.open(path) as tf:
        for m in tf:
            if "/mm-" in m.name:
                assert m.pax_headers["size"] == str(m.size)
                assert m.pax_headers["comment"] == "kept"
    assert_only_mm_changed(
        original, path.read_bytes(), directory_fix(images, tmp_path, want), tmp_path
    )
    revert_archive(path)
    assert path.read_bytes() == original


def test_a_sparse_archive_stays_sparse_and_fast(images: Path, tmp_path: Path) -> None:
    members = archives.sound_members(images)
    members.insert(2, (archives._info("checkpoint/pages-2.img", archives.GB10), b""))
    src = archives.write_tar(tmp_path / "big.tar", members)
    out = tmp_path / "big-fixed.tar"
    start = time.perf_counter()
    fix_archive(src, wanted(images), output=out)
    assert time.perf_counter() - start < 10.0
    assert out.stat().st_size > archives.GB10
    assert out.stat().st_blocks * 512 < 64 << 20
    revert_archive(out)
    with open(src, "rb") as a, open(out, "rb") as b:
        assert a.read(1 << 20) == b.read(1 << 20)
        a.seek(-(1 << 20), os.SEEK_END)
        b.seek(-(1 << 20), os.SEEK_END)
        assert a.read() == b.read()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, archives.Hostile]:
    work = tmp_path_factory.mktemp("hostile-fix")
    images = archives.synthetic_images(work / "images", RINGS)
    return archives.hostile_archives(images, work / "archives")


def _snapshot(d: Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(d.iterdir())
    }


def test_hostile_archives_are_refused_by_fix_and_nothing_changes(
    hostile: dict[str, archives.Hostile], tmp_path: Path
) -> None:
    folder = next(iter(hostile.values())).path.parent
    before = _snapshot(folder)
    out = tmp_path / "out.tar"
    for case, h in hostile.items():
        with pytest.raises(ImageError):
            fix_archive(h.path, {("mm-101.img", 0x7F0000000000): 9})
        with pytest.raises(ImageError):
            fix_archive(h.path, {("mm-101.img", 0x7F0000000000): 9}, output=out)
        assert not out.exists(), case
        with pytest.raises(ImageError):
            revert_archive(h.path)
    assert _snapshot(folder) == before


def test_a_failed_write_changes_nothing(images: Path, tmp_path: Path) -> None:
    """EFBIG half-way through the temp file (RLIMIT_FSIZE): error, no temp, old archive."""
    src = archives.podman_archive(images, tmp_path, "none", name="ckpt.tar")
    before = _snapshot(tmp_path)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 3
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
            fix_archive(src, wanted(images))
        except ImageError as err:
            code = 0 if "File too large" in str(err) and "nothing was changed" in str(err) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _snapshot(tmp_path) == before


def test_an_archive_changing_under_the_fix_is_refused(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = archives.kubelet_archive(images, tmp_path)
    real = transaction.write_fixed

    def meddle(*args: object) -> int:
        with open(src, "ab") as f:
            f.write(bytes(512))
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(transaction, "write_fixed", meddle)
    with pytest.raises(ImageError, match="changed while criu-aio was rewriting it"):
        fix_archive(src, wanted(images))
    assert not Path(f"{src}.criu-aio.journal").exists()
    assert not (tmp_path / f".{src.name}.criu-aio-tmp").exists()


@contextlib.contextmanager
def renames_fail(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The rename of the temp archive over the archive fails (as if the run died there)."""
    real_rename = os.rename

    def crash(a: str, b: str, **kw: object) -> None:
        if str(a).endswith(".criu-aio-tmp"):
            raise OSError(5, "Input/output error (simulated crash)")
        real_rename(a, b, **kw)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(os, "rename", crash)
        yield


def test_interrupted_rename_is_rolled_forward(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = archives.podman_archive(images, tmp_path, "gzip")
    original = tar_stream(src)
    want = wanted(images)
    with pytest.raises(ImageError, match="run the same command again"), renames_fail(monkeypatch):
        fix_archive(src, want)
    assert tar_stream(src) == original  # still the old archive
    jr = ajournal.from_json(json.loads(Path(f"{src}.criu-aio.journal").read_text()))
    assert jr.pending is not None
    lines: list[str] = []
    done = fix_archive(src, want, log=lines.append)
    assert any("completed the fix of an interrupted run" in line for line in done.result.recovered)
    assert not done.written  # the interrupted run's result already holds every value
    assert {(r.file, r.ring_id): r.nr_req for r in read_archive(src).rings} == want
    revert_archive(src)
    assert tar_stream(src) == original


def test_interrupted_run_without_its_temp_is_rolled_back(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = archives.podman_archive(images, tmp_path, "zstd")
    want = wanted(images)
    fix_archive(src, want)  # a first fix: the journal has originals to keep
    fixed = tar_stream(src)
    with pytest.raises(ImageError), renames_fail(monkeypatch):
        fix_archive(src, {k: v + 7 for k, v in want.items()})
    (tmp_path / f".{src.name}.criu-aio-tmp").unlink()  # the temp is lost too
    done = revert_archive(src)
    assert any("rolled back" in line for line in done.result.recovered)
    # The journal went back to its state before the lost run: revert reaches CRIU's bytes.
    assert tar_stream(src) != fixed
    assert {(r.file, r.ring_id): r.nr_req for r in read_archive(src).rings} == {
        (r.file, r.ring_id): r.nr_req for r in mm.read_rings(images)
    }


def test_a_stale_temp_is_removed(images: Path, tmp_path: Path) -> None:
    src = archives.kubelet_archive(images, tmp_path)
    stale = tmp_path / f".{src.name}.criu-aio-tmp"
    stale.write_bytes(b"half an archive")
    done = fix_archive(src, wanted(images))
    assert f"removed stale temporary file {stale.name}" in done.result.recovered
    assert not stale.exists()


def test_in_place_fix_refuses_a_symlink(images: Path, tmp_path: Path) -> None:
    src = archives.kubelet_archive(images, tmp_path)
    link = tmp_path / "link.tar"
    link.symlink_to(src)
    with pytest.raises(ImageError, match="symbolic link"):
        fix_archive(link, wanted(images))
    out = tmp_path / "via-link.tar"
    assert fix_archive(link, wanted(images), output=out).written


def test_revert_refuses_an_archive_replaced_since(images: Path, tmp_path: Path) -> None:
    src = archives.podman_archive(images, tmp_path, "gzip")
    fix_archive(src, wanted(images))
    # A new export under the same name (other images): the journal is stale.
    other = archives.synthetic_images(tmp_path / "other", {101: [2, 2], 102: [4]}, seed=9)
    (tmp_path / "x").mkdir()
    os.replace(archives.podman_archive(other, tmp_path / "x", "gzip"), src)
    before = src.read_bytes()
    with pytest.raises(ImageError, match="changed since criu-aio rewrote it"):
        revert_archive(src)
    assert src.read_bytes() == before
