"""Clients of a CRIU service socket, run as other uids (tests/testbed/users.py).

Every function here runs in a child forked from the test that dropped to
another uid: sockets and the standard library modules imported at the top
only. Results are plain values (bytes, floats, strings) so they pickle.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import time
from collections.abc import Sequence
from typing import Any

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2

REPLY_MAX = 1 << 20
VERSION = rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString()


def restore_request(images_dir: str = "", **opts: Any) -> bytes:
    """A RESTORE criu_req naming *images_dir* (a path, as the service resolves it)."""
    req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
    req.opts.images_dir_fd = -1
    if images_dir:
        req.opts.images_dir = images_dir
    req.opts.log_file = "restore.log"
    for key, value in opts.items():
        setattr(req.opts, key, value)
    return req.SerializeToString()


def resp(payload: bytes) -> rpc_pb2.criu_resp:
    out = rpc_pb2.criu_resp()
    out.ParseFromString(payload)
    return out


def ask(address: str, data: bytes, timeout: float) -> tuple[bytes, float]:
    """Connect, send *data*, return (the reply, seconds from connect to reply)."""
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sk:
        sk.settimeout(timeout)
        sk.connect(address)
        sk.send(data)
        reply = sk.recv(REPLY_MAX)
    return reply, time.monotonic() - start


def try_ask(address: str, data: bytes, timeout: float) -> tuple[bytes | None, str, float]:
    """Like ``ask``, but a refused connection is a result: (reply or None, error, seconds)."""
    start = time.monotonic()
    try:
        reply, _ = ask(address, data, timeout)
        return reply, "", time.monotonic() - start
    except OSError as err:
        return None, type(err).__name__, time.monotonic() - start


def ask_with_fds(address: str, data: bytes, paths: Sequence[str], timeout: float) -> bytes:
    """Send *data* with descriptors of *paths* (opened O_PATH) attached (SCM_RIGHTS)."""
    fds = [os.open(p, os.O_PATH) for p in paths]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sk:
            sk.settimeout(timeout)
            sk.connect(address)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(_ints(fds))))]
            sk.sendmsg([data], rights)
            return sk.recv(REPLY_MAX)
    finally:
        for fd in fds:
            os.close(fd)


def _ints(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(4, "little", signed=True) for v in values)


def ask_naming_fd(address: str, path: str, timeout: float) -> bytes:
    """A RESTORE whose images_dir_fd is this process's descriptor of *path* (O_PATH)."""
    fd = os.open(path, os.O_PATH)
    try:
        req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
        req.opts.images_dir_fd = fd
        return ask(address, req.SerializeToString(), timeout)[0]
    finally:
        os.close(fd)


def send_and_close(address: str, requests: Sequence[bytes]) -> tuple[int, None]:
    """``fire_and_forget`` for ``Holding``: the sender stays alive afterwards."""
    return fire_and_forget(address, requests), None


def fire_and_forget(address: str, requests: Sequence[bytes]) -> int:
    """Send each request on its own connection and close it at once (the sender stays)."""
    for data in requests:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sk:
            sk.connect(address)
            sk.send(data)
    return len(requests)


def many(address: str, data: bytes, count: int, timeout: float) -> list[tuple[bool, str, float]]:
    """*count* connections at once, each sending *data*; (success, cr_errmsg/error, seconds)."""
    start = time.monotonic()
    socks = []
    out: list[tuple[bool, str, float]] = []
    for _ in range(count):
        sk = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sk.connect(address)
            sk.send(data)
        except OSError as err:
            sk.close()
            out.append((False, type(err).__name__, time.monotonic() - start))
            continue
        socks.append(sk)
    deadline = start + timeout
    pending = set(socks)
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], deadline - time.monotonic())
        for sk in ready:
            pending.discard(sk)
            try:
                payload = sk.recv(REPLY_MAX)
            except OSError as err:
                out.append((False, type(err).__name__, time.monotonic() - start))
                continue
            if not payload:
                out.append((False, "EOF", time.monotonic() - start))
                continue
            answer = resp(payload)
            out.append((answer.success, answer.cr_errmsg, time.monotonic() - start))
    out += [(False, "timeout", timeout) for _ in pending]
    for sk in socks:
        sk.close()
    return out


def hold_idle(address: str, count: int) -> tuple[int, list[socket.socket]]:
    """Open *count* connections and send nothing (for ``Holding``): (connected, sockets)."""
    socks = []
    for _ in range(count):
        sk = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sk.connect(address)
        socks.append(sk)
    return len(socks), socks


def hold_sent(address: str, data: bytes, count: int) -> tuple[int, list[socket.socket]]:
    """Open *count* connections, send *data* on each, never read (for ``Holding``)."""
    count_done, socks = hold_idle(address, count)
    for sk in socks:
        sk.send(data)
    return count_done, socks


def hold_flock(path: str) -> tuple[bool, int]:
    """Take LOCK_EX on the folder *path* and keep it (for ``Holding``)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True, fd


def mkfifo(path: str) -> bool:
    os.mkfifo(path, 0o600)
    return True


def ask_with_images_fd(address: str, data: bytes, folder: str, timeout: float) -> bytes:
    """*data* (a criu_req) with opts.images_dir_fd set to this process's descriptor of
    *folder*, as pycriu and libcriu send it (CRIU 4.1.1 reads no images_dir path)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        req = rpc_pb2.criu_req.FromString(data)
        req.opts.images_dir_fd = fd
        return ask(address, req.SerializeToString(), timeout)[0]
    finally:
        os.close(fd)
