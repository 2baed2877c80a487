"""The warm helper: a running ``criu-aio service`` does a swrk's AIO work for it.

Why. Most of what ``criu-aio swrk`` adds to a restore is Python importing the
estimator, the image codec and protobuf (tens of ms), not the work itself
(a few ms). A ``criu-aio service`` has all of that imported already. When
``$CRIU_AIO_SERVICE`` names its socket, ``swrk`` opens the images directory
the way CRIU will, passes the descriptor to the service (SCM_RIGHTS) and gets
the decision back; then it hands over to CRIU or answers the client exactly as
when it does the work itself. If the service is not there, or anything about
the exchange fails, swrk does the work in-process: the helper can only make a
restore faster, never make it fail.

The service does the work *as the swrk process* (SO_PEERCRED uid, gid and
groups, see ``images_access.acting_as``) and only through the descriptor it
was given, so a client gets no rewrite it could not make itself. Simulated
kernel specs are honoured (decide, never rewrite); others (``agent:CMD``
would run a command in the service) are refused and swrk works alone.

Wire (one SOCK_SEQPACKET datagram each way)::

    request := MAGIC kernel_spec(utf-8)        + SCM_RIGHTS [images dir fd]
    reply   := "H" why(utf-8)                    hand over to CRIU
             | "A" errno(int32 le) why_len(uint32 le) why criu_resp
             | "F" why(utf-8)                    not here: do it yourself

A criu_req cannot start with MAGIC's first byte ("C" is field 8 with wire
type 3, which CRIU's messages never use), so the service tells the two apart.
"""

from __future__ import annotations

import _socket
import os
import stat
import struct

from criu_aio_plugin.errors import CriuAioError
from criu_aio_plugin.rpc import images_access, protocol, transport
from criu_aio_plugin.rpc.log import Log
from criu_aio_plugin.rpc.protocol import Answer, HandOver
from criu_aio_plugin.rpc.wire import RpcRequest

ENV_SERVICE = "CRIU_AIO_SERVICE"
MAGIC = b"CRIU-AIO-FIX1\0"
TIMEOUT = 60.0  # the helper probes and may rewrite: generous, it is only a fallback bound
_HEAD = struct.Struct("<iI")
_FD = struct.Struct("i")


def _allowed_spec(spec: str) -> bool:
    return spec in ("", "live") or spec.startswith("sim:")


def encode_reply(decision: HandOver | Answer | None, why: str = "") -> bytes:
    if decision is None:
        return b"F" + why.encode("utf-8", "replace")
    if isinstance(decision, HandOver):
        return b"H" + decision.why.encode("utf-8", "replace")
    text = decision.why.encode("utf-8", "replace")
    return b"A" + _HEAD.pack(decision.errno, len(text)) + text + decision.payload


def decode_reply(data: bytes) -> HandOver | Answer | None:
    """The helper's decision, or None (do the work yourself) for "F" or anything odd."""
    kind, rest = data[:1], data[1:]
    if kind == b"H":
        return HandOver(f"criu-aio service: {rest.decode('utf-8', 'replace')}")
    if kind == b"A" and len(rest) >= _HEAD.size:
        errno, length = _HEAD.unpack_from(rest)
        body = rest[_HEAD.size :]
        if length <= len(body):
            why = body[:length].decode("utf-8", "replace")
            return Answer(payload=body[length:], why=why, errno=errno)
    return None


def ask(
    address: str, dir_fd: int, kernel_spec: str, timeout: float = TIMEOUT
) -> HandOver | Answer | None:
    """Have the service at *address* judge (and fix) the images open as *dir_fd*."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _FD.pack(dir_fd))]
        sock.sendmsg([MAGIC + kernel_spec.encode("utf-8", "replace")], rights)
        return decode_reply(sock.recv(1 << 20))
    except OSError:
        return None
    finally:
        sock.close()


def restore_via_service(
    req: RpcRequest, fd: int, address: str, log: Log
) -> HandOver | Answer | None:
    """swrk's RESTORE through the warm helper; None when swrk must do it itself."""
    from criu_aio_plugin.rpc.aio_work import config_sets_images_dir

    at = protocol.locate_images(req, config_sets_images_dir(req.config_file))
    if isinstance(at, HandOver):
        return at
    try:
        dir_fd = images_access.open_images_dir(at, transport.peer_cred(fd))
    except CriuAioError:
        return None  # the in-process path says why, in its own words
    try:
        decision = ask(address, dir_fd, os.environ.get("CRIU_AIO_KERNEL", ""))
    finally:
        os.close(dir_fd)
    if decision is None:
        log.info(f"criu-aio service at {address} did not help; doing the AIO work here")
    return decision


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD.size
            fds += [_FD.unpack_from(data, i)[0] for i in range(0, usable, _FD.size)]
    return fds


def serve_fix(fd: int, log: Log, max_request: int) -> int:
    """In a service worker: answer one helper request on connection *fd*."""
    from criu_aio_plugin.cli import exitcodes
    from criu_aio_plugin.rpc import aio_work

    sock = _socket.socket(fileno=fd)
    fds: list[int] = []
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(
            max_request, _socket.CMSG_SPACE(4 * _FD.size), _socket.MSG_CMSG_CLOEXEC
        )
        fds = _received_fds(ancdata)
        spec = data[len(MAGIC) :].decode("utf-8", "replace")
        reply: bytes
        if len(fds) != 1 or not stat.S_ISDIR(os.fstat(fds[0]).st_mode):
            reply = encode_reply(None, "expected one images directory descriptor")
        elif not _allowed_spec(spec):
            reply = encode_reply(None, f"kernel spec {spec!r} is not taken over the socket")
        else:
            peer = transport.peer_cred(fd)
            log.info(
                f"fixing images for pid {peer.pid} uid {peer.uid} (kernel {spec or 'default'})"
            )
            with images_access.acting_as(peer):
                decision = aio_work.judge_and_fix(fds[0], log, spec or None)
            reply = encode_reply(decision)
        sock.send(reply)
        return exitcodes.OK
    except OSError as err:
        log.error(f"helper request failed: {err.strerror}")
        return exitcodes.ERROR
    finally:
        for received in fds:
            os.close(received)
        sock.detach()
