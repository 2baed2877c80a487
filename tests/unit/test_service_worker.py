"""A service worker's last resorts, on a real socketpair: its deadline and its crash log.

``service_worker.run`` is what the forked worker runs; here it runs in the
test process with ``serve_connection`` replaced by something that blocks in a
system call or raises, and the test plays the client.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import service_worker, transport

REQUEST = rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = signal.getsignal(signal.SIGALRM)
    yield client, ours
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)
    client.close()
    ours.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_worker_blocked_in_a_system_call_answers_at_its_deadline(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, ours = pair
    client.send(REQUEST)
    read_end, write_end = os.pipe()  # nobody ever writes: os.read blocks

    def stuck(fd: int, log: Log, **_: object) -> int:
        os.read(read_end, 1)
        return 0

    monkeypatch.setattr(service_worker, "serve_connection", stuck)
    log = Log(str(tmp_path / "w.log"), stdio_allowed=False)
    start = time.monotonic()
    try:
        code = service_worker.run(ours.fileno(), log, criu=None, max_request=1024, work_timeout=0.3)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert 0.25 < time.monotonic() - start < 10
    assert code == 1
    answer = rpc_pb2.criu_resp.FromString(client.recv(1 << 16))
    assert not answer.success and answer.cr_errno == errno.ETIMEDOUT
    assert "did not finish within 0.3 s" in answer.cr_errmsg
    lines = _lines(tmp_path / "w.log")
    assert len(lines) == 1 and "(client told)" in lines[0]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_crash_is_one_log_line_with_its_traceback(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, ours = pair
    client.send(REQUEST)

    def broken(fd: int, log: Log, **_: object) -> int:
        raise ValueError("Exceeds the limit (4300 digits)\nforged line")

    monkeypatch.setattr(service_worker, "serve_connection", broken)
    log = Log(str(tmp_path / "w.log"), stdio_allowed=False)
    code = service_worker.run(ours.fileno(), log, criu=None, max_request=1024, work_timeout=30)
    assert code == 1
    answer = rpc_pb2.criu_resp.FromString(client.recv(1 << 16))
    assert not answer.success and answer.cr_errno == errno.EIO
    assert "internal error" in answer.cr_errmsg
    lines = _lines(tmp_path / "w.log")
    assert len(lines) == 1, lines
    line = lines[0]
    assert "worker crashed (client told): ValueError: Exceeds the limit" in line
    assert "\\nforged line" in line  # the newline is escaped: still one line
    assert "test_service_worker.py:" in line and "in broken" in line


def test_a_crash_after_the_answer_does_not_answer_twice(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, ours = pair
    client.send(REQUEST)

    def answers_then_breaks(fd: int, log: Log, **_: object) -> int:
        transport.consume(fd, 1 << 16)
        transport.send(fd, b"first")
        raise RuntimeError("late")

    monkeypatch.setattr(service_worker, "serve_connection", answers_then_breaks)
    log = Log(str(tmp_path / "w.log"), stdio_allowed=False)
    service_worker.run(ours.fileno(), log, criu=None, max_request=1024, work_timeout=30)
    ours.close()
    assert client.recv(1 << 16) == b"first"
    assert client.recv(1 << 16) == b""  # and nothing after it
    assert "worker crashed (client not told): RuntimeError: late" in _lines(tmp_path / "w.log")[0]


def test_exec_disarms_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interval timer survives execve: CRIU must not inherit the worker's deadline."""
    seen: list[tuple[float, float]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        seen.append(signal.getitimer(signal.ITIMER_REAL))
        raise OSError(errno.ENOENT, "not really")

    monkeypatch.setattr(os, "execv", fake_execv)
    old = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b, pytest.raises(OSError):
            transport.exec_criu(["/bin/true"], a.fileno())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen == [(0.0, 0.0)]
