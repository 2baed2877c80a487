"""criu-aio's log: targets that always land, levels, escaping, never stdio in swrk mode."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from criu_aio_plugin import log as log_module
from criu_aio_plugin.log import Log, escape, write_criu_log


@pytest.fixture
def default_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """The default file and the private fallback, moved under tmp_path; no syslog."""
    default = tmp_path / "var-log" / "criu-aio.log"
    private = tmp_path / "private" / "criu-aio.log"
    monkeypatch.setattr(log_module, "DEFAULT_FILE", str(default))
    monkeypatch.setattr(log_module, "_fallback_file", lambda: str(private))
    monkeypatch.setattr(log_module, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    yield default, private


def test_file_target_levels_and_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "aio.log"
    monkeypatch.setenv("CRIU_AIO_CONFIG", "none")
    monkeypatch.setenv("CRIU_AIO_LOG", f"file:{path}")
    monkeypatch.setenv("CRIU_AIO_LOG_LEVEL", "warning")
    log = Log(stdio_allowed=False)
    log.info("not written")
    log.warning("ring 0x7f00 refused")
    log.error("and this")
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"criu-aio[{os.getpid()}] warning: ring 0x7f00 refused")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Log(str(path), stdio_allowed=False, level="debug").debug("appended")
    assert path.read_text().splitlines()[-1].endswith("debug: appended")


def test_none_writes_nothing(tmp_path: Path) -> None:
    log = Log("none", stdio_allowed=False, level="info")
    log.error("dropped")
    log.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("images\ncriu-aio[1] error: forged", "images\\x0acriu-aio[1] error: forged"),
        ("a\rb\x00c\x1bd\x7f", "a\\x0db\\x00c\\x1bd\\x7f"),
        ("line\u2028sep\x85nel", "line\\u2028sep\\x85nel"),
        ("tab\there", "tab\\x09here"),
        ("/ckpt/été 😀 \\n", "/ckpt/été 😀 \\n"),  # printable text, backslashes kept
    ],
)
def test_escape_keeps_one_line(text: str, shown: str) -> None:
    assert escape(text) == shown
    assert escape(text).isprintable()


def test_a_peer_cannot_forge_lines(tmp_path: Path) -> None:
    path = tmp_path / "aio.log"
    log = Log(str(path), stdio_allowed=False, level="info")
    log.warning(
        "cannot open the images_dir '/x\n2024-01-01T00:00:00.000Z criu-aio[1] error: pwned'"
    )
    log.info("x" * 20000)
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert "\\x0a2024-01-01" in lines[0]
    assert len(lines[1]) < log_module.MAX_MESSAGE + 200 and "[11808 more characters]" in lines[1]


def test_no_syslog_falls_back_to_the_default_file(default_files: tuple[Path, Path]) -> None:
    default, private = default_files
    log = Log("auto", stdio_allowed=False, level="info")
    log.info("restore of /ckpt: 2 ring(s) rewritten")
    log.close()
    # no /dev/log is auto's documented case: the file, without a note each time
    lines = default.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("info: restore of /ckpt: 2 ring(s) rewritten")
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
    assert not private.exists()
    # asked for syslog explicitly: the file says why the line is there
    Log("syslog", stdio_allowed=False, level="info").info("second")
    note, line = default.read_text().splitlines()[1:]
    assert "warning: log target syslog" in note and "logging here instead" in note
    assert line.endswith("info: second")


def test_a_dead_syslog_is_noted_in_the_file(
    default_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, _ = default_files
    stale = tmp_path / "stale-dev-log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(str(stale))  # the socket file stays, nobody listens: ECONNREFUSED
    monkeypatch.setattr(log_module, "SYSLOG_SOCKET", str(stale))
    Log("auto", stdio_allowed=False, level="info").error("still lands")
    note, line = default.read_text().splitlines()
    assert "Connection refused" in note and line.endswith("error: still lands")


def test_unwritable_targets_fall_back_until_one_works(default_files: tuple[Path, Path]) -> None:
    default, private = default_files
    default.parent.mkdir()
    default.mkdir()  # a directory where the default file should be: open fails
    log = Log("/nonexistent/dir/aio.log", stdio_allowed=False, level="info")
    log.error("the log cannot cost a restore")
    log.close()
    text = private.read_text()
    assert "the log cannot cost a restore" in text
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700


def test_private_fallback_refuses_a_folder_not_ours(default_files: tuple[Path, Path]) -> None:
    default, private = default_files
    default.parent.mkdir()
    default.mkdir()
    private.parent.mkdir(mode=0o777)
    os.chmod(private.parent, 0o777)  # someone else's kind of folder: not used
    log = Log("auto", stdio_allowed=False, level="info")
    log.error("nowhere safe")  # swallowed, never raises
    assert log.kind == "none"
    assert not private.exists()


def test_syslog_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "dev-log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    monkeypatch.setattr(log_module, "SYSLOG_SOCKET", address)
    try:
        log = Log("syslog", stdio_allowed=False, level="debug")
        log.warning("ring refused\nforged line")
        log.close()
        datagram = server.recv(65536).decode()
    finally:
        server.close()
    # LOG_DAEMON|LOG_WARNING, then the header syslog(3) writes
    assert datagram.startswith("<28>")
    assert datagram.endswith(f" criu-aio[{os.getpid()}]: ring refused\\x0aforged line")


@pytest.mark.parametrize(("allowed", "kind"), [(True, "stderr"), (False, "syslog")])
def test_stderr_only_where_stdio_is_ours(allowed: bool, kind: str) -> None:
    assert Log("stderr", stdio_allowed=allowed, level="info").kind == kind


def test_swrk_default_never_touches_stdio(tmp_path: Path) -> None:
    """Default target in a child, with no syslog: nothing appears on its stdout/stderr."""
    code = (
        "from criu_aio_plugin import log as m\n"
        f"m.DEFAULT_FILE = {str(tmp_path / 'd' / 'criu-aio.log')!r}\n"
        f"m.SYSLOG_SOCKET = {str(tmp_path / 'no-log')!r}\n"
        "log = m.Log(stdio_allowed=False)\n"
        "log.error('to a file, not stderr')\n"
        "log.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIU_AIO_LOG")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert (proc.stdout, proc.stderr) == (b"", b"")
    assert "to a file, not stderr" in (tmp_path / "d" / "criu-aio.log").read_text()


def test_criu_log_file_is_written_like_criu_never_through_a_symlink(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "restore.log").write_text("stale lines from an earlier CRIU run\n" * 3)
    path = write_criu_log(str(work), "restore.log", ["ring 0x7f00\nrefused", "see the log"])
    assert path == str(work / "restore.log")
    lines = (work / "restore.log").read_text().splitlines()
    assert len(lines) == 2  # truncated, like CRIU's O_TRUNC
    stamp, _, rest = lines[0].partition(") ")
    assert stamp[0] == "(" and stamp[1:].replace(".", "").isdigit()  # (SS.UUUUUU), as CRIU
    assert rest == "Error (criu-aio): ring 0x7f00\\x0arefused"
    write_criu_log(str(work), "new.log", ["created as CRIU creates its log"])
    assert stat.S_IMODE((work / "new.log").stat().st_mode) == 0o600
    secret = tmp_path / "secret"
    secret.write_text("untouched")
    (work / "link.log").symlink_to(secret)
    with pytest.raises(OSError):
        write_criu_log(str(work), "link.log", ["x"])
    assert secret.read_text() == "untouched"
    os.mkfifo(work / "fifo.log")
    with pytest.raises(OSError):  # no reader: ENXIO at once, never a wait
        write_criu_log(str(work), "fifo.log", ["x"])
