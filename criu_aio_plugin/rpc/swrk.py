"""``criu-aio swrk <fd>``: serve one RPC client like ``criu swrk <fd>``, then become CRIU.

The client (runc, pycriu, libcriu, go-criu) spawned us with a SOCK_SEQPACKET
socket at descriptor <fd> and will send one criu_req. We peek at it, decide
with ``protocol`` and either exec the real CRIU with ``swrk <fd>`` on the very
same socket (the request still queued), or answer it ourselves and exit.

The pass-through path (every request but RESTORE and CHECK) imports only
``wire``, ``transport``, ``log``, ``protocol`` and ``criu_locate``: no protobuf,
no argparse, no logging, no dataclasses. Nothing is written to fds 0-2 (under
runc they are the container's stdio); see ``log``.
"""

from __future__ import annotations

import os

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.errors import ClientError, CriuAioError
from criu_aio_plugin.rpc import protocol, transport, wire
from criu_aio_plugin.rpc.log import Log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.rpc.protocol import Role

USAGE = """usage: {prog} <fd>

Serve one CRIU RPC client on the SOCK_SEQPACKET socket at descriptor <fd>, as
`criu swrk <fd>` does: a RESTORE gets its checkpoint's AIO rings fixed for this
host (or is refused with the reason in cr_errmsg when no nr_req can help), a
CHECK gets the AIO check, then the real CRIU takes over the same socket. Point
clients at criu-aio instead of criu: `runc --criu`, pycriu's use_binary,
libcriu's criu_set_service_binary, or install it as `criu` on PATH.

Never writes to stdout/stderr while serving. Environment:
  CRIU_AIO_CRIU        the real CRIU (else `criu` on PATH, skipping criu-aio)
  CRIU_AIO_KERNEL      kernel judged: live (default) or sim:...; a simulated
                       kernel may refuse a restore but never rewrites images
  CRIU_AIO_SERVICE     socket of a running `criu-aio service`: it does the AIO
                       work, already warm (falls back to doing it here)
  CRIU_AIO_CHECK_POLICY  what fails a CHECK: formula (default: wherever CRIU's
                       nr_req formula is wrong here), host (only what criu-aio
                       cannot fix either), off
  CRIU_AIO_LOG         syslog (default), /path/to/file, or none
  CRIU_AIO_LOG_LEVEL   debug, info (default), warning, error

exit codes (only when CRIU was not started; otherwise CRIU's own):
  1  the request was refused or could not be handed over (reason sent to the client)
  2  usage error
  4  refused: some ring cannot exist on this host
  5  refused: fs.aio-max-nr cannot hold the rings
"""


def _criu_command(explicit: str | None) -> list[str]:
    from criu_aio_plugin.criu_locate import criu_command, find_criu

    return criu_command(find_criu(explicit))


def _exit_code(answer: protocol.Answer) -> int:
    import errno

    if answer.errno == errno.ERANGE:
        return exitcodes.IMPOSSIBLE
    if answer.errno == errno.EAGAIN:
        return exitcodes.BUDGET
    return exitcodes.ERROR


def examine(
    peeked: transport.Peeked, fd: int, log: Log, role: Role
) -> protocol.HandOver | protocol.Answer:
    """RESTORE/CHECK (and, for the service, every request): parse and do the AIO work."""
    from criu_aio_plugin.rpc import aio_work, helper

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
        address = os.environ.get(helper.ENV_SERVICE) if role == "swrk" else None
        if address:
            decision = helper.restore_via_service(req, fd, address, log)
            if decision is not None:
                return decision
        return aio_work.restore(req, transport.peer_cred(fd), log, role=role)
    if req.req_type == wire.CHECK:
        return aio_work.check(log)
    return protocol.HandOver(f"{wire.type_name(req.req_type)}: nothing for criu-aio to do")


def _refuse(fd: int, peeked: transport.Peeked, answer: protocol.Answer, log: Log) -> int:
    log.warning(answer.why)
    try:
        transport.consume(fd, peeked.size)
        transport.send(fd, answer.payload)
    except OSError as err:  # the client went away: nobody to tell, stdio is not ours
        log.error(f"could not answer the client: {err.strerror}")
    return _exit_code(answer)


def serve(
    fd: int,
    log: Log,
    *,
    role: Role = "swrk",
    criu: str | None = None,
    peeked: transport.Peeked | None = None,
) -> int:
    """Serve the first request on *fd*: exec CRIU (never returns) or answer and return."""
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
        return _refuse(fd, peeked, step, log)
    req_type = head.req_type if head is not None else wire.EMPTY
    try:
        command = _criu_command(criu)
    except CriuAioError as err:
        msg = f"criu-aio: cannot hand over to CRIU: {err}"
        return _refuse(fd, peeked, protocol.answer(req_type, err.errno, msg), log)
    log.info(f"{step.why}; exec {command[-1]} swrk {fd}")
    log.close()
    try:
        transport.exec_criu(command, fd)
    except OSError as err:
        msg = f"criu-aio: cannot exec CRIU {command[0]}: {err.strerror}"
        return _refuse(fd, peeked, protocol.answer(req_type, err.errno or 0, msg), log)
    raise AssertionError("unreachable: exec returned")  # pragma: no cover


def run(argv: list[str], prog: str) -> int:
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        print(USAGE.format(prog=prog))
        return exitcodes.OK
    if len(argv) != 1 or not argv[0].isdigit():
        # stderr is the client's here, but a wrong command line is not a
        # client session: say it once, as `criu swrk` does.
        os.write(2, f"usage: {prog} <fd>\n".encode())
        return exitcodes.USAGE
    fd = int(argv[0])
    log = Log(stdio_allowed=False)
    try:
        transport.check_seqpacket(fd)
    except ClientError as err:
        # Not a socket we can peek at: CRIU gets the command line as it is and
        # reports the problem the way it always does.
        log.error(f"{err}; handing `swrk {fd}` to CRIU as it is")
        log.close()
        transport.exec_argv([*_criu_command(None), "swrk", argv[0]])
    return serve(fd, log)
