"""``criu-aio swrk <fd>``: serve one RPC client like ``criu swrk <fd>``, then become CRIU.

The client (runc, pycriu, libcriu, go-criu) spawned us with a SOCK_SEQPACKET
socket at descriptor <fd> and will send one criu_req. We peek at it, decide
with ``protocol`` and either exec the real CRIU with ``swrk <fd>`` on the very
same socket (the request still queued), or answer it ourselves and exit.

The real CRIU is located first, before anything is examined or rewritten:
without one nothing is touched and the client gets the reason. A refusal's
reason goes to the client (cr_errmsg), to criu-aio's log and into the log
file CRIU would have written for the request (``criu_log``), where runc and
crun point their users.

The pass-through path (every request but RESTORE and CHECK) imports only
``wire``, ``transport``, ``log``, ``config``, ``protocol`` and ``criu_locate``:
no protobuf, no argparse, no logging, no dataclasses. Nothing is written to
fds 0-2 (under runc they are the container's stdio); see ``log``.
"""

from __future__ import annotations

from criu_aio_plugin.errors import ClientError, CriuAioError
from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import protocol, transport, wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.rpc.protocol import Role
    from criu_aio_plugin.status import Status


def real_criu(explicit: str | None) -> list[str]:
    """The argv prefix that runs the real CRIU (``criu_locate``)."""
    from criu_aio_plugin.criu_locate import criu_command, find_criu

    return criu_command(find_criu(explicit))


def examine(
    peeked: transport.Peeked, fd: int, log: Log, role: Role
) -> protocol.HandOver | protocol.Answer:
    """RESTORE/CHECK (and, for the service, every request): parse and do the AIO work."""
    from criu_aio_plugin.rpc import aio_work

    try:
        req = wire.parse_request(peeked.data)
    except ClientError as err:
        if role == "service":
            return protocol.malformed(str(err))
        return protocol.HandOver(f"unparsable request, CRIU answers it: {err}")
    refusal = protocol.screen(req, role)
    if refusal is not None:
        return refusal
    if req.req_type == wire.RESTORE:
        return aio_work.restore(req, transport.peer_cred(fd), log, role=role)
    if req.req_type == wire.CHECK:
        return aio_work.check(log)
    return protocol.HandOver(f"{wire.type_name(req.req_type)}: nothing for criu-aio to do")


def _tell_criu_log(
    fd: int, peeked: transport.Peeked, answer: protocol.Answer, log: Log, role: Role
) -> str:
    """Write the reason into the log file CRIU would have written (see ``criu_log``);
    a note for the refusal's log line."""
    try:
        req = wire.parse_request(peeked.data)
    except ClientError:
        return ""  # not a request CRIU would log for
    if not req.has_opts:
        return ""  # VERSION and the like: CRIU keeps no log for them
    try:
        from criu_aio_plugin.rpc import criu_log, images_access

        criu_conf = criu_log.criu_config()  # CRIU's own files, read as CRIU reads them
        if criu_conf is None:
            return ""  # CRIU would not even start with them; it says so itself
        peer = transport.peer_cred(fd)
        lines = [answer.why, f"CRIU did not run. criu-aio's own log: {log.where()}"]
        # The service writes as its peer: a file the peer could not create is not
        # made, and the request's config file is read only as the peer could.
        with images_access.acting_as(peer, enabled=role == "service"):
            return criu_log.tell(req, peer.pid, lines, criu_conf).note()
    except Exception as err:  # the answer to the client matters more than this copy
        return f" [CRIU's log not written: {type(err).__name__}: {err}]"


def _refuse(
    fd: int, peeked: transport.Peeked, answer: protocol.Answer, log: Log, role: Role = "swrk"
) -> Status:
    # CRIU's log first: the client looks at it as soon as it has the answer.
    # One event, one line: the reason, where else it went, whether it arrived.
    told = _tell_criu_log(fd, peeked, answer, log, role)
    log.warning(answer.why + told + deliver(fd, peeked, answer))
    return answer.status


def deliver(fd: int, peeked: transport.Peeked, answer: protocol.Answer) -> str:
    """Consume the request and send *answer*; "" or, when the client did not get
    it, a note for the refusal's log line (one line per event)."""
    try:
        transport.consume(fd, peeked.size)
        transport.send(fd, answer.payload, wait=False)
    except OSError as err:  # the client went away: nobody to tell, stdio is not ours
        return f" (not delivered: {err.strerror})"
    return ""


def serve(
    fd: int,
    log: Log,
    *,
    role: Role = "swrk",
    criu: str | None = None,
    peeked: transport.Peeked | None = None,
) -> Status:
    """Serve the first request on *fd*: exec CRIU (never returns) or answer it.

    Returns the status of the answer sent instead of CRIU (IMPOSSIBLE or BUDGET
    for a refused restore, ERROR for anything else); the command line
    (``criu_aio_plugin.cli.swrk``) turns it into an exit code.
    """
    if peeked is None:
        try:
            peeked = transport.peek(fd)
        except OSError as err:
            # CRIU will meet the same socket error and report it its own way.
            log.error(f"cannot read the request: {err.strerror}; CRIU takes over as it is")
            peeked = transport.Peeked(b"", 0, False)
    head: wire.RequestHead | None = None
    try:
        head = wire.read_head(peeked.data)
        step: protocol.HandOver | protocol.Examine | protocol.Answer = protocol.first_step(
            head, role
        )
    except ClientError as err:
        if role == "service":
            step = protocol.malformed(str(err))
        else:
            step = protocol.HandOver(f"not a criu_req ({peeked.size} bytes), CRIU answers: {err}")
    if isinstance(step, protocol.Answer):
        return _refuse(fd, peeked, step, log, role)
    req_type = head.req_type if head is not None else wire.EMPTY
    # The real CRIU before anything else: without one, no image may be touched.
    try:
        command = real_criu(criu)
    except CriuAioError as err:
        msg = f"criu-aio: cannot hand over to CRIU: {err}"
        return _refuse(fd, peeked, protocol.answer(req_type, err.errno, msg), log, role)
    if isinstance(step, protocol.Examine):
        try:
            step = examine(peeked, fd, log, role)
        except Exception as err:
            # Whatever goes wrong in our own work (a bug, a broken install, an
            # ImportError from a client's PYTHONPATH) must not cost the client its
            # restore: CRIU gets the request as if we were not here. Nobody sees
            # a traceback in swrk mode, so it goes to the log.
            step = protocol.HandOver(
                f"criu-aio could not examine the request: {type(err).__name__}: {err}"
            )
    if isinstance(step, protocol.Answer):
        return _refuse(fd, peeked, step, log, role)
    log.info(f"{step.why}; exec {command[-1]} swrk {fd}")
    log.close()
    try:
        transport.exec_criu(command, fd)
    except OSError as err:
        msg = f"criu-aio: cannot exec CRIU {command[0]}: {err.strerror}"
        return _refuse(fd, peeked, protocol.answer(req_type, err.errno or 0, msg), log, role)
    raise AssertionError("unreachable: exec returned")  # pragma: no cover
