"""The socket and exec layer of the interposer: a thin shell around ``protocol``.

Everything here works on the raw descriptor the client gave us (``criu swrk
<fd>``), through a socket object that is detached again before the descriptor
is handed to CRIU, so Python never closes it behind our back. We use the C
module ``_socket`` directly: the ``socket`` wrapper adds nothing we need and
is not lean (its enum conversions; docs/architecture.md).

- ``peek``: the whole first datagram without consuming it. SOCK_SEQPACKET
  keeps datagram boundaries; ``recv_into`` with MSG_PEEK|MSG_TRUNC returns the
  datagram's real length even when the buffer is smaller (Linux socket(7)), so
  one 1-byte peek gives the size and a second peek of that size the bytes.
  A datagram that grows between the two (it cannot: it is the queue head) or a
  short peek is reported as truncation rather than parsed.
- ``peer_cred``: SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS. For a
  socketpair these are the creds of the process that created the pair, i.e.
  the client; CRIU reads the same after our exec.
- ``consume`` / ``send``: read the request for real, send a criu_resp.
- ``exec_criu``: replace this process by the real CRIU, keeping the socket
  descriptor (it was inherited without FD_CLOEXEC); every descriptor Python
  opened itself is O_CLOEXEC (PEP 446), so nothing of ours reaches CRIU. An
  interval timer survives execve(2), so a service worker's deadline timer is
  disarmed first: CRIU's own work has no deadline of ours.
"""

from __future__ import annotations

import _socket
import errno
import os
import struct

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Sequence
else:
    import _signal  # signal's C half: the enum conversions of ``signal`` cost import time

_SO_PEERGROUPS = getattr(_socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_MAX_GROUPS = 65536


class PeerCred(Value):
    """Who is at the other end of the socket (SO_PEERCRED, SO_PEERGROUPS)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


class Peeked(Value):
    """The first datagram, read without consuming it.

    ``size`` is the datagram's real length; ``data`` holds all of it unless
    ``truncated`` (it was larger than the caller's limit).
    """

    data: bytes
    size: int
    truncated: bool

    @property
    def eof(self) -> bool:
        return self.size == 0


def _sock(fd: int) -> _socket.socket:
    # socket(fileno=fd) takes the family/type from the descriptor; the caller
    # must detach() it so the fd is not closed when the object goes.
    return _socket.socket(fileno=fd)


def check_seqpacket(fd: int) -> None:
    """Raise ClientError unless *fd* is an AF_UNIX SOCK_SEQPACKET socket."""
    try:
        sock = _sock(fd)
    except OSError as err:
        raise ClientError(
            f"fd {fd} is not a usable socket: {err.strerror}", errno=err.errno
        ) from err
    try:
        kind = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_TYPE)
        family = sock.family
    finally:
        sock.detach()
    if family != _socket.AF_UNIX or kind != _socket.SOCK_SEQPACKET:
        raise ClientError(
            f"fd {fd} is not an AF_UNIX SOCK_SEQPACKET socket (family {family}, type {kind})",
            errno=errno.ENOTSOCK,
        )


def peek(fd: int, limit: int | None = None) -> Peeked:
    """The first datagram queued on *fd*, left in the queue (blocks until one comes).

    With *limit*, a larger datagram is not read: ``truncated`` is set and
    ``data`` holds its first *limit* bytes (the service uses this to refuse
    oversized requests without allocating them).
    """
    sock = _sock(fd)
    try:
        one = bytearray(1)
        size = sock.recv_into(one, 1, _socket.MSG_PEEK | _socket.MSG_TRUNC)
        if size == 0:
            return Peeked(b"", 0, False)
        want = size if limit is None else min(size, limit)
        buf = bytearray(want)
        got = sock.recv_into(buf, want, _socket.MSG_PEEK | _socket.MSG_TRUNC)
    finally:
        sock.detach()
    truncated = got > want or (limit is not None and size > limit)
    return Peeked(bytes(buf[: min(got, want)]), got, truncated)


def consume(fd: int, size: int) -> int:
    """Read (and drop) the queued datagram of *size* bytes; return its real length."""
    sock = _sock(fd)
    try:
        buf = bytearray(max(size, 1))
        return sock.recv_into(buf, len(buf), _socket.MSG_TRUNC)
    finally:
        sock.detach()


def send(fd: int, payload: bytes, *, wait: bool = True) -> None:
    """Send one datagram (a criu_resp) on *fd*; without *wait*, fail (EAGAIN) rather than block."""
    sock = _sock(fd)
    try:
        sock.send(payload, 0 if wait else _socket.MSG_DONTWAIT)
    finally:
        sock.detach()


def queued(fd: int) -> int | None:
    """The size of the datagram queued on *fd*, without waiting: 0 at EOF, None if none."""
    sock = _sock(fd)
    try:
        return sock.recv_into(
            bytearray(1), 1, _socket.MSG_PEEK | _socket.MSG_TRUNC | _socket.MSG_DONTWAIT
        )
    except OSError:  # EAGAIN: nothing queued; anything else: nothing we can read
        return None
    finally:
        sock.detach()


def peer_cred(fd: int) -> PeerCred:
    """SO_PEERCRED and, when the kernel has it, SO_PEERGROUPS of *fd*."""
    sock = _sock(fd)
    try:
        raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
        groups: tuple[int, ...] = ()
        try:
            graw = sock.getsockopt(_socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * _MAX_GROUPS)
            groups = struct.unpack(f"{len(graw) // 4}I", graw)
        except OSError:
            groups = _groups_from_proc(pid)
    finally:
        sock.detach()
    return PeerCred(pid=pid, uid=uid, gid=gid, groups=groups)


def _groups_from_proc(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return ()


def clear_cloexec(fd: int) -> None:
    """Make sure *fd* survives exec (it is the socket CRIU must serve)."""
    os.set_inheritable(fd, True)


def exec_criu(command: Sequence[str], fd: int) -> None:
    """Replace this process by ``command + ["swrk", str(fd)]``; returns only by raising."""
    clear_cloexec(fd)
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    argv = [*command, "swrk", str(fd)]
    os.execv(argv[0], argv)


def exec_argv(argv: Sequence[str]) -> None:
    """Replace this process by *argv* (the real CRIU with a command line's arguments)."""
    os.execv(argv[0], list(argv))
