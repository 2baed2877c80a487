"""Paths a client names, read with the client's rights and without blocking (``peer_files``).

Run as root (CI does): the "client" is a child forked from the test that drops
to uid 65534 (tests/testbed/users.py), so the kernel's own permission checks
are what is tested. Every open that could block is guarded by an alarm.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.guards import fails_if_blocked
from testbed.users import NOBODY, as_user

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.rpc import peer_files
from criu_aio_plugin.rpc.transport import PeerCred

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="acting as another uid needs root")


@pytest.fixture(autouse=True)
def never_blocks() -> Iterator[None]:
    with fails_if_blocked(10):
        yield


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder every uid can traverse (pytest's tmp_path sits under a 0700 one)."""
    top = Path(tempfile.mkdtemp(prefix="criu-aio-peer-", dir="/tmp"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize(
    ("text", "sets"),
    [
        ("images-dir /x\n", True),
        ("--images-dir=/x\n", True),
        ("  -D /x  # here\n", True),
        ("# images-dir /x\n", False),
        ("log-file x.log\nverbosity 4\n", False),
        ("", False),
    ],
)
def test_config_lines(tmp_path: Path, text: str, sets: bool) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    for strict in (False, True):
        assert peer_files.config_sets_images_dir(str(conf), strict=strict) is sets


def test_missing_config_sets_nothing(tmp_path: Path) -> None:
    for strict in (False, True):
        assert not peer_files.config_sets_images_dir(str(tmp_path / "none"), strict=strict)


@pytest.mark.parametrize("what", ["fifo", "device", "socket", "link-to-fifo", "directory", "big"])
def test_config_that_is_not_a_small_regular_file(tmp_path: Path, what: str) -> None:
    path = tmp_path / "c.conf"
    if what in ("fifo", "link-to-fifo"):
        os.mkfifo(tmp_path / "fifo")  # nobody ever writes: an open() would block
        if what == "fifo":
            path = tmp_path / "fifo"
        else:
            path.symlink_to(tmp_path / "fifo")
    elif what == "device":
        path = Path("/dev/zero")  # read forever
    elif what == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
    elif what == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"#" * (peer_files.CONFIG_LIMIT + 1))
    with pytest.raises(ClientError) as exc:
        peer_files.config_sets_images_dir(str(path), strict=True)
    assert exc.value.errno in (errno.EINVAL, errno.EFBIG)
    assert repr(str(path)) in str(exc.value)
    # swrk (not strict): we cannot know, CRIU decides
    assert peer_files.config_sets_images_dir(str(path), strict=False)


def test_config_through_a_symlink_is_followed_like_criu(tmp_path: Path) -> None:
    (tmp_path / "real.conf").write_text("images-dir /x\n")
    (tmp_path / "link.conf").symlink_to(tmp_path / "real.conf")
    assert peer_files.config_sets_images_dir(str(tmp_path / "link.conf"), strict=True)


def _outcome(path: str) -> tuple[str, int | bool]:
    try:
        return ("sets", peer_files.config_sets_images_dir(path, strict=True))
    except ClientError as err:
        return (str(err).replace(path, "PATH"), err.errno)


@needs_root
def test_root_only_config_is_no_oracle(world: Path) -> None:
    """As uid 65534, a root-only file reads the same whether it exists, is a
    FIFO, or says images-dir: EACCES, nothing more."""
    secret = world / "secret"
    secret.mkdir(mode=0o700)
    (secret / "with").write_text("images-dir /root\n")
    (secret / "without").write_text("log-file x\n")
    os.mkfifo(secret / "fifo")
    outcomes = {
        name: as_user(NOBODY, _outcome, str(secret / name))
        for name in ("with", "without", "fifo", "missing")
    }
    assert len(set(outcomes.values())) == 1, outcomes
    text, code = outcomes["with"]
    assert code == errno.EACCES and "Permission denied" in str(text)
    # a 0600 root file in a folder the client can read: EACCES too, whatever it holds
    (world / "root.conf").write_text("images-dir /root\n")
    (world / "root.conf").chmod(0o600)
    assert as_user(NOBODY, _outcome, str(world / "root.conf"))[1] == errno.EACCES


@needs_root
def test_client_config_is_read_with_client_rights(world: Path) -> None:
    conf = world / "mine.conf"
    conf.write_text("images-dir /elsewhere\n")
    conf.chmod(0o644)
    assert as_user(NOBODY, _outcome, str(conf)) == ("sets", True)


def _images_dir(root: Path) -> Path:
    d = root / "images"
    d.mkdir()
    for name in ("inventory.img", "mm-1.img", "core-1.img", "notes.txt"):
        (d / name).write_bytes(b"x")
    return d


def _screen(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        peer_files.screen_images_dir(fd)
    finally:
        os.close(fd)


def test_images_folder_of_regular_files_passes(tmp_path: Path) -> None:
    d = _images_dir(tmp_path)
    os.mkfifo(d / "not-an-image.fifo")  # CRIU never opens it
    _screen(d)


@pytest.mark.parametrize("what", ["fifo", "symlink", "socket", "directory"])
def test_images_folder_with_a_non_regular_image_is_refused(tmp_path: Path, what: str) -> None:
    d = _images_dir(tmp_path)
    target = d / "pages-1.img"
    if what == "fifo":
        os.mkfifo(target)
    elif what == "symlink":
        target.symlink_to("/etc/shadow")
    elif what == "socket":
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(str(target))
    else:
        target.mkdir()
    with pytest.raises(ClientError) as exc:
        _screen(d)
    assert "'pages-1.img'" in str(exc.value) and "regular image files" in str(exc.value)


def test_images_folder_entry_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_files, "MAX_IMAGES_DIR_ENTRIES", 3)
    d = _images_dir(tmp_path)
    with pytest.raises(ClientError) as exc:
        _screen(d)
    assert exc.value.errno == errno.EFBIG


def test_peer_cwd_of_a_live_client(tmp_path: Path) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        fd = peer_files.open_peer_cwd(a.fileno(), PeerCred(pid=os.getpid(), uid=0, gid=0))
        try:
            assert os.path.samestat(os.fstat(fd), os.stat("."))
        finally:
            os.close(fd)


def test_peer_cwd_of_a_client_that_exited(tmp_path: Path) -> None:
    """The process that connected is gone (its connection lives on in a child)."""
    address = str(tmp_path / "l.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(address)
        listener.listen(1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the client: connect, then exit at once
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.connect(address)
            os._exit(0)
        conn, _ = listener.accept()
        os.waitpid(pid, 0)  # reaped: its pid may now be anybody's
        with conn:
            with pytest.raises(ClientError) as exc:
                peer_files.open_peer_cwd(conn.fileno(), PeerCred(pid=pid, uid=0, gid=0))
            assert exc.value.errno == errno.ESRCH
            assert f"the client (pid {pid}) exited" in str(exc.value)
