"""Hostile and broken checkpoints: a clear error naming file and offset/field,
a non-zero exit, and nothing modified.

Each content case damages mm-2.img of a three-image checkpoint; the library
(``read_rings``), ``criu-aio inspect`` and ``criu-aio fix`` must all refuse it
and every file in the directory must keep its bytes, mode and mtime.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_mm_pb2
from criu_aio_plugin.cli.main import main
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import codec, journal, mm, rewrite, synthetic
from criu_aio_plugin.images.rewrite import atomic

HEADER = struct.pack("<II", codec.IMG_COMMON_MAGIC, codec.MM_MAGIC)
IS_ROOT = os.geteuid() == 0


def _good_entry(pid: int = 2) -> criu_aio_mm_pb2.mm_entry:
    return synthetic.mm_entry(synthetic.rings_for([1, 2, 4]), 30, pid)


def _image(entry: criu_aio_mm_pb2.mm_entry) -> bytes:
    payload = entry.SerializeToString()
    return HEADER + struct.pack("<I", len(payload)) + payload


def _with_payload(payload: bytes) -> bytes:
    return HEADER + struct.pack("<I", len(payload)) + payload


def _ring_edit(**fields: int) -> bytes:
    e = _good_entry()
    for k, v in fields.items():
        setattr(e.aios[1], k, v)
    return _image(e)


def _dup_ring() -> bytes:
    e = _good_entry()
    e.aios[2].id = e.aios[0].id
    return _image(e)


def _no_nr_req() -> bytes:
    e = _good_entry()
    raw = e.SerializeToString()
    aio = criu_aio_mm_pb2.aio_ring_entry(id=0x7F0000000000, nr_req=1, ring_len=4096)
    body = aio.SerializeToString()
    stripped = b"".join(
        body[f.start : f.end] for f in protowire.walk(body) if f.number != 2
    )  # drop nr_req
    return _with_payload(raw + protowire.length_delimited_field(16, stripped))


GOOD = _image(_good_entry())
_PAYLOAD = GOOD[12:]


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    message: str  # a fragment of the error message
    offset: int | None = None  # expected ImageError.offset, when it is known
    field: str | None = None  # expected ImageError.field fragment


CASES = [
    Case("empty file", b"", "truncated", 0),
    Case("3 bytes", HEADER[:3], "truncated", 0),
    Case("7 bytes", HEADER[:7], "truncated", 0),
    Case("wrong common magic", b"\x00\x00\x00\x00" + GOOD[4:], "not a CRIU image", 0),
    Case("pstree magic", HEADER[:4] + struct.pack("<I", 0x50273030) + GOOD[8:], "mm magic", 4),
    Case("common magic twice", HEADER[:4] * 2 + GOOD[8:], "bad image magic", 4),
    Case("header only", HEADER, "holds 0", 8),
    Case("two entries", GOOD + GOOD[8:], "holds 2", 8),
    Case("stray bytes after the entry", GOOD + b"\x01\x02", "stray bytes", len(GOOD)),
    Case("entry cut short", GOOD[:-10], "runs past the end", 8),
    Case("length 0xffffffff", HEADER + b"\xff\xff\xff\xff" + _PAYLOAD, "exceeds", 8),
    Case("length just over the maximum", HEADER + struct.pack("<I", 64 << 20 | 1), "exceeds", 8),
    Case("garbage protobuf", _with_payload(b"\xff" * 40), "malformed mm_entry", 12),
    Case("varint cut inside", _with_payload(_PAYLOAD + b"\x08\x80"), "malformed", 12),
    Case("group wire type", _with_payload(_PAYLOAD + b"\x0b"), "malformed", 12),
    Case(
        "required fields missing",
        _with_payload(b"\x08\x01"),
        "lacks required",
        12,
        "mm_end_code",
    ),
    Case(
        "garbage aios submessage",
        _with_payload(_PAYLOAD + b"\x82\x01\x03\xff\xff\xff"),
        "malformed",
        12,
    ),
    Case("aios without nr_req", _no_nr_req(), "lacks required", 12, "nr_req"),
    Case("ring_len 0", _ring_edit(ring_len=0), "ring_len is 0", None, "aios[1].ring_len"),
    Case(
        "ring_len not page aligned",
        _ring_edit(ring_len=4097),
        "not a multiple of 4096",
        None,
        "aios[1].ring_len",
    ),
    Case("ring_len enormous", _ring_edit(ring_len=1 << 31), "exceeds", None, "aios[1].ring_len"),
    Case("nr_req 0", _ring_edit(nr_req=0), "nr_req is 0", None, "aios[1].nr_req"),
    Case("ring address 0", _ring_edit(id=0), "not a page address", None, "aios[1].id"),
    Case(
        "ring address unaligned",
        _ring_edit(id=0x7F0000000010),
        "not a page address",
        None,
        "aios[1].id",
    ),
    Case("duplicate ring address", _dup_ring(), "repeats aios[0]", None, "aios[2].id"),
]


def _snapshot(d: Path) -> dict[str, tuple[bytes | str, int, int]]:
    out: dict[str, tuple[bytes | str, int, int]] = {}
    for p in sorted(d.iterdir()):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode):
            content: bytes | str = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(p)
        else:
            content = stat.filemode(st.st_mode)
        out[p.name] = (content, st.st_mode, st.st_mtime_ns)
    return out


def _checkpoint(d: Path, damaged: bytes | None = None) -> Path:
    d.mkdir(exist_ok=True)
    for pid in (1, 2, 3):
        (d / f"mm-{pid}.img").write_bytes(_image(_good_entry(pid)))
    (d / "pstree.img").write_bytes(b"not read by criu-aio")
    if damaged is not None:
        (d / "mm-2.img").write_bytes(damaged)
    return d


def _assert_refused(d: Path, capsys: pytest.CaptureFixture[str], fragment: str) -> None:
    """``inspect`` and ``fix`` both exit non-zero, naming the file; nothing changes."""
    before = _snapshot(d)
    for cmd in (["inspect", str(d)], ["fix", str(d), "--kernel", "live"]):
        rc = main(cmd)
        err = capsys.readouterr().err
        assert rc != 0, cmd
        assert "mm-2.img" in err and fragment in err, err
    assert _snapshot(d) == before


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_content_case(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _checkpoint(tmp_path / "ckpt", case.content)
    with pytest.raises(ImageError, match=re.escape(case.message)) as exc:
        mm.read_rings(d)
    err = exc.value
    assert err.path == str(d / "mm-2.img")
    if case.offset is not None:
        assert err.offset == case.offset
    if case.field is not None:
        assert err.field is not None and case.field in err.field
    assert err.offset is not None or err.field is not None
    _assert_refused(d, capsys, case.message)


def test_file_too_large_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    with open(d / "mm-2.img", "r+b") as f:
        f.truncate(mm.MAX_MM_IMAGE_SIZE + 1)  # sparse: costs no disk
    with pytest.raises(ImageError, match="maximum") as exc:
        mm.read_rings(d)
    assert exc.value.offset == 0
    _assert_refused(d, capsys, "maximum")


# --- not a regular file --------------------------------------------------------


def _symlink(d: Path) -> None:
    (d / "mm-2.img").unlink()
    (d / "mm-2.img").symlink_to(d / "mm-1.img")


def _dangling(d: Path) -> None:
    (d / "mm-2.img").unlink()
    (d / "mm-2.img").symlink_to(d / "nowhere.img")


def _fifo(d: Path) -> None:
    (d / "mm-2.img").unlink()
    os.mkfifo(d / "mm-2.img")


def _chardev(d: Path) -> None:
    (d / "mm-2.img").unlink()
    os.mknod(d / "mm-2.img", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null


def _directory(d: Path) -> None:
    (d / "mm-2.img").unlink()
    (d / "mm-2.img").mkdir()


def _socket(d: Path) -> None:
    (d / "mm-2.img").unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(d / "mm-2.img"))
    s.close()


KINDS: list[tuple[str, Callable[[Path], None], str, bool]] = [
    ("symlink", _symlink, "symbolic link", False),
    ("dangling symlink", _dangling, "symbolic link", False),
    ("fifo", _fifo, "a FIFO", False),
    ("character device", _chardev, "a character device", True),
    ("directory", _directory, "a directory", False),
    ("socket", _socket, "cannot open", False),
]


@pytest.mark.parametrize(
    ("name", "make", "fragment", "needs_root"), KINDS, ids=[k[0] for k in KINDS]
)
def test_not_a_regular_file(
    name: str,
    make: Callable[[Path], None],
    fragment: str,
    needs_root: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if needs_root and not IS_ROOT:
        pytest.skip("mknod needs root (run the tests as root, as CI does)")
    d = _checkpoint(tmp_path / "ckpt")
    make(d)
    with pytest.raises(ImageError, match=fragment) as exc:
        mm.read_rings(d)
    assert exc.value.path == str(d / "mm-2.img")
    _assert_refused(d, capsys, fragment)


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImageError, match="cannot open the images directory"):
        mm.read_rings(tmp_path / "absent")
    assert main(["inspect", str(tmp_path / "absent")]) != 0
    assert "absent" in capsys.readouterr().err


def test_directory_without_mm_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pstree.img").write_bytes(b"x")
    for cmd in ("inspect", "fix"):
        assert main([cmd, str(tmp_path)]) == 1
        assert "no mm-<pid>.img" in capsys.readouterr().err
    assert mm.read_rings(tmp_path) == []  # the library itself: simply no rings


def test_directory_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ImageError, match="Not a directory"):
        mm.read_rings(tmp_path / "f")


# --- the rewrite under failures -----------------------------------------------------


def _fix_map(d: Path) -> dict[tuple[str, int], int]:
    return {(r.file, r.ring_id): r.nr_req * 2 + 1 for r in mm.read_rings(d)}


def _no_temps(d: Path) -> None:
    assert not [p for p in os.listdir(d) if p.startswith(journal.TMP_PREFIX)]


def test_ring_not_in_image(tmp_path: Path) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    before = _snapshot(d)
    with pytest.raises(ImageError, match="no ring at 0x1000") as exc:
        rewrite.apply_fix(d, {("mm-1.img", 0x1000): 5})
    assert exc.value.field == "mm_entry.aios"
    assert _snapshot(d) == before


def test_new_nr_req_out_of_range(tmp_path: Path) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    ring = mm.read_rings(d)[0]
    before = _snapshot(d)
    for bad in (0, -1, 1 << 32):
        with pytest.raises(ImageError, match="out of range"):
            rewrite.apply_fix(d, {(ring.file, ring.ring_id): bad})
    assert _snapshot(d) == before


def _after_last_temp(monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """Run ``act`` right after the rewrite wrote its last temp (mm-3.img's)."""
    real = atomic.write_temp

    def write_then_act(dir_fd: int, shown: str, name: str, *rest: Any, **kw: Any) -> None:
        real(dir_fd, shown, name, *rest, **kw)
        if name == "mm-3.img":
            act()

    monkeypatch.setattr(atomic, "write_temp", write_then_act)


def test_file_vanishes_mid_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    wanted = _fix_map(d)
    _after_last_temp(monkeypatch, (d / "mm-2.img").unlink)
    before = _snapshot(d)
    with pytest.raises(ImageError, match="vanished") as exc:
        rewrite.apply_fix(d, wanted)
    assert exc.value.path == str(d / "mm-2.img")
    after = _snapshot(d)
    del before["mm-2.img"]
    assert after == before
    _no_temps(d)


def test_file_changed_mid_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    wanted = _fix_map(d)
    _after_last_temp(monkeypatch, lambda: os.utime(d / "mm-1.img", ns=(1, 1)))
    with pytest.raises(ImageError, match="changed while being rewritten") as exc:
        rewrite.apply_fix(d, wanted)
    assert exc.value.path == str(d / "mm-1.img")
    for pid in (1, 2, 3):
        assert (d / f"mm-{pid}.img").read_bytes() == _image(_good_entry(pid))
    _no_temps(d)
    assert not (d / journal.JOURNAL_NAME).exists()


def test_unreadable_journal_blocks_the_fix(tmp_path: Path) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    (d / journal.JOURNAL_NAME).write_text("{not json")
    before = _snapshot(d)
    with pytest.raises(ImageError, match="unreadable journal") as exc:
        rewrite.apply_fix(d, _fix_map(d))
    assert exc.value.path == str(d / journal.JOURNAL_NAME)
    assert _snapshot(d) == before


def test_journal_symlink_is_refused(tmp_path: Path) -> None:
    d = _checkpoint(tmp_path / "ckpt")
    (tmp_path / "elsewhere").write_text("{}")
    (d / journal.JOURNAL_NAME).symlink_to(tmp_path / "elsewhere")
    before = _snapshot(d)
    with pytest.raises(ImageError, match="symbolic link"):
        rewrite.apply_fix(d, _fix_map(d))
    assert _snapshot(d) == before


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_full_disk_during_the_write(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "64k") as d:
        # Three images of ~18 KiB fill most of 64 KiB: their temps cannot all fit.
        for pid in (1, 2, 3):
            e = synthetic.mm_entry(synthetic.rings_for([1, 2]), 300, pid)
            (d / f"mm-{pid}.img").write_bytes(_image(e))
        wanted = _fix_map(d)
        before = _snapshot(d)
        with pytest.raises(ImageError) as exc:
            rewrite.apply_fix(d, wanted)
        assert exc.value.errno == errno.ENOSPC
        assert exc.value.path is not None and "mm-" in exc.value.path
        assert _snapshot(d) == before
        _no_temps(d)


# Everything is imported before dropping root: the interpreter's own files may
# sit under a directory (e.g. /root/.pyenv) that uid 65534 cannot traverse.
_AS_NOBODY = r"""
import os, sys
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import mm, rewrite
os.setgid(65534); os.setuid(65534)
d = sys.argv[1]
wanted = {(r.file, r.ring_id): r.nr_req * 2 + 1 for r in mm.read_rings(d)}
try:
    rewrite.apply_fix(d, wanted)
except ImageError as err:
    print(err.errno, err.path, err, sep="\n")
    raise SystemExit(1)
raise SystemExit(0)
"""


@pytest.mark.skipif(not IS_ROOT, reason="switching to uid 65534 needs root (CI runs as root)")
def test_directory_we_may_not_write() -> None:
    # pytest's tmp_path lives under a 0700 directory: use one uid 65534 can reach.
    base = Path(tempfile.mkdtemp(prefix="criu-aio-ro-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        _run_as_nobody(base)
    finally:
        shutil.rmtree(base)


def _run_as_nobody(base: Path) -> None:
    d = _checkpoint(base / "ckpt")
    os.chmod(d, 0o755)
    for p in d.iterdir():
        os.chmod(p, 0o644)
    before = _snapshot(d)
    proc = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(d)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1, proc.stderr
    err_no, path, message = proc.stdout.splitlines()[:3]
    assert int(err_no) == errno.EACCES
    assert path.startswith(str(d / "mm-"))
    assert "writable" in message
    assert _snapshot(d) == before
    # The console script as that user: exit 1, message names the file.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            # Everything imported before dropping root: this Python's files
            # (under /root) are not readable by nobody.
            # argparse's help formatter imports shutil lazily, so it goes too.
            # The checkout itself may be unreadable to nobody (a clone in a 0700
            # folder): criu-aio's own modules too, main's lazy ones included.
            "import os,sys,locale,shutil,argparse,importlib,pkgutil,criu_aio_plugin;"
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages("
            "criu_aio_plugin.__path__, 'criu_aio_plugin.') if not m.name.endswith('__main__')];"
            "from criu_aio_plugin.cli import main;"
            "os.setgid(65534); os.setuid(65534); sys.exit(main.main(sys.argv[1:]))",
            "fix",
            str(d),
            "--revert",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr  # nothing to revert: no journal, no write needed
    assert _snapshot(d) == before


@pytest.mark.skipif(not IS_ROOT, reason="bind mounts need root (CI runs as root)")
def test_read_only_directory_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`criu-aio fix` on the live kernel, a ring that needs a rewrite, and a
    read-only bind mount of the checkpoint (root included): the decision is
    made, the write is refused, exit 1 naming the file, nothing changed."""
    src = _checkpoint(tmp_path / "ckpt", _ring_edit(nr_req=5000))
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        before = _snapshot(ro)
        assert main(["fix", str(ro), "--dry-run"]) == 3  # decided: a rewrite is needed
        capsys.readouterr()
        assert main(["fix", str(ro)]) == 1
        err = capsys.readouterr().err
        assert "mm-2.img" in err and "Read-only file system" in err, err
        assert _snapshot(ro) == before
    finally:
        subprocess.run(["umount", str(ro)], check=False)
