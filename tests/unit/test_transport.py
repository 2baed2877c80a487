"""The socket/exec layer on real AF_UNIX SOCK_SEQPACKET socketpairs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.rpc import transport


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("size", [1, 2, 100, 4096, 65537, 150_000])
def test_peek_reads_whole_datagram_without_consuming(
    pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    client, ours = pair
    data = os.urandom(size)
    client.send(data)
    client.send(b"second")
    first = transport.peek(ours.fileno())
    again = transport.peek(ours.fileno())
    assert first == again == transport.Peeked(data, size, False)
    # still queued: a plain read gets the same bytes, then the next datagram
    assert ours.recv(size + 10) == data
    assert ours.recv(100) == b"second"


def test_peek_limit_reports_truncation_and_real_size(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, ours = pair
    client.send(b"x" * 5000)
    peeked = transport.peek(ours.fileno(), limit=100)
    assert peeked.truncated and peeked.size == 5000 and peeked.data == b"x" * 100
    assert transport.consume(ours.fileno(), 100) == 5000  # MSG_TRUNC: the real length
    client.send(b"ok")
    assert transport.peek(ours.fileno(), limit=100) == transport.Peeked(b"ok", 2, False)


def test_peek_sees_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    client, ours = pair
    client.close()
    assert transport.peek(ours.fileno()).eof


def test_consume_then_send(pair: tuple[socket.socket, socket.socket]) -> None:
    client, ours = pair
    client.send(b"request")
    assert transport.consume(ours.fileno(), 7) == 7
    transport.send(ours.fileno(), b"answer")
    assert client.recv(100) == b"answer"
    ours.setblocking(False)
    with pytest.raises(BlockingIOError):
        ours.recv(10)  # the request is gone


def test_socket_object_is_detached(pair: tuple[socket.socket, socket.socket]) -> None:
    client, ours = pair
    client.send(b"a")
    for _ in range(50):
        transport.peek(ours.fileno())
        transport.peer_cred(ours.fileno())
    os.fstat(ours.fileno())  # still open: our wrappers never closed it


def test_peer_cred_is_the_creator(pair: tuple[socket.socket, socket.socket]) -> None:
    _, ours = pair
    cred = transport.peer_cred(ours.fileno())
    assert (cred.pid, cred.uid, cred.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert sorted(cred.groups) == sorted(set(os.getgroups()))


def test_peer_cred_of_another_process() -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind("\0criu-aio-test-" + str(os.getpid()))
    server.listen(1)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,sys,time;s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET);"
            "s.connect(chr(0)+sys.argv[1]);s.recv(1)",
            "criu-aio-test-" + str(os.getpid()),
        ]
    )
    try:
        conn, _ = server.accept()
        assert transport.peer_cred(conn.fileno()).pid == child.pid
        conn.send(b"x")
        conn.close()
    finally:
        child.wait(10)
        server.close()


def test_check_seqpacket(pair: tuple[socket.socket, socket.socket]) -> None:
    transport.check_seqpacket(pair[1].fileno())
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        with pytest.raises(ClientError, match="SOCK_SEQPACKET"):
            transport.check_seqpacket(a.fileno())
        with pytest.raises(ClientError, match="not a usable socket"):
            transport.check_seqpacket(r)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


EXEC_PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    fd = int(sys.argv[-1])
    sock = socket.socket(fileno=fd)
    request = sock.recv(1000)
    names = os.listdir("/proc/self/fd")  # its own fd is closed again: drop it below
    fds = sorted(int(n) for n in names if os.path.exists("/proc/self/fd/" + n))
    sock.send(json.dumps({"argv": sys.argv[1:], "fds": fds, "request": request.hex()}).encode())
    """
)

EXEC_SHIM = textwrap.dedent(
    """
    import os, sys
    from criu_aio_plugin.rpc import transport
    from criu_aio_plugin.log import Log
    fd = int(sys.argv[1])
    log = Log(sys.argv[2], stdio_allowed=False)
    log.info("about to exec")  # opens the log file: it must not leak
    extra = os.open("/proc/self/status", os.O_RDONLY)  # Python opens O_CLOEXEC
    transport.peek(fd)
    transport.exec_criu([sys.executable, "-c", sys.argv[3]], fd)
    """
)


def test_exec_keeps_only_the_socket(tmp_path: object) -> None:
    """What an exec'd program inherits: fds 0-2 and the client's socket, nothing of ours."""
    log_path = os.path.join(str(tmp_path), "shim.log")
    client, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        client.send(b"\x08\x0a")  # criu_req{type: VERSION}
        proc = subprocess.Popen(
            [sys.executable, "-c", EXEC_SHIM, str(theirs.fileno()), log_path, EXEC_PROBE],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        report = json.loads(client.recv(65536))
        assert proc.wait(30) == 0
    finally:
        client.close()
    fd = report["argv"][-1]
    assert report["argv"] == ["swrk", fd]
    assert report["fds"] == [0, 1, 2, int(fd)]
    assert bytes.fromhex(report["request"]) == b"\x08\x0a"  # peeked, not consumed
    with open(log_path, encoding="utf-8") as f:
        assert "about to exec" in f.read()
