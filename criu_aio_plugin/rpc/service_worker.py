"""One connection of ``criu-aio service``, in the worker forked for it.

The accept loop (``service_loop``) forks a worker only once the connection's
first datagram is queued. The worker:

1. starts its deadline: an interval timer that raises ``WorkDeadline`` after
   ``work_timeout`` seconds wherever the worker is, a blocking system call
   included (Python retries an interrupted call only when the handler returns;
   ours raises). The timer is disarmed just before the exec, so CRIU's work
   (a restore can take minutes) has none;
2. peeks at the first request; one larger than ``--max-request`` or not a
   criu_req is answered with criu_resp{success=false} instead of crashing;
3. takes the client's working directory (/proc/<peer>/cwd, only while the
   very process that connected is alive, see ``peer_files``), so that a
   relative images_dir means what the client meant;
4. refuses what ``criu service`` refuses (rst_sibling, inherit_fd, a page
   server fd: CRIU allows them only in swrk mode, and the worker we exec *is*
   in swrk mode), and from a client that is not root what would make the
   root CRIU run a program of its choice (config_file, exec_cmd: see
   ``service_policy``);
5. for RESTORE, does the AIO work *as the client* (SO_PEERCRED uid/gid and
   SO_PEERGROUPS as effective ids; see ``images_access`` and ``peer_files``),
   so it reads and rewrites only what the client could;
6. execs ``criu swrk <conn fd>``: the real CRIU serves the connection. CRIU
   then sees the client as its SO_PEERCRED peer, exactly as a worker of
   ``criu service`` does (it resolves images_dir_fd in the client's fd table).

Whatever ends the worker before the exec (its deadline, a bug) is logged in
one line with its traceback, and the client, if its request is still
unanswered, gets a criu_resp saying so: never a silent ``os._exit``.
"""

from __future__ import annotations

import errno as _errno
import os
import signal

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import crash, peer_files, protocol, service_policy, swrk, transport
from criu_aio_plugin.status import FINE, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType


class WorkDeadline(BaseException):
    """The worker's deadline passed (a BaseException: ``swrk`` hands every
    ``Exception`` of the AIO work over to CRIU; a request that outlived its
    deadline is refused instead, CRIU would be stuck the same way)."""


def _deadline_passed(signum: int, frame: FrameType | None) -> None:
    raise WorkDeadline


def serve_connection(fd: int, log: Log, *, criu: str | None, max_request: int) -> Status:
    """Serve one accepted connection in a worker: answer (its status), or exec CRIU on it."""
    peeked = transport.peek(fd, limit=max_request)
    if peeked.eof:
        log.debug("client closed the connection without a request")
        return FINE
    if peeked.truncated:
        answer = protocol.malformed(
            f"request of {peeked.size} bytes is larger than the service's limit of {max_request}"
        )
        return _answer(fd, peeked, answer, log)
    peer = transport.peer_cred(fd)
    log.info(f"connection from pid {peer.pid} uid {peer.uid}")
    refusal = service_policy.screen(peeked.data, peer.uid)
    if refusal is not None:
        return _answer(fd, peeked, refusal, log)
    try:
        cwd = peer_files.open_peer_cwd(fd, peer)
    except ClientError as err:
        answer = protocol.answer(0, err.errno, f"criu-aio service: {err}")
        return _answer(fd, peeked, answer, log)
    try:
        os.fchdir(cwd)
    finally:
        os.close(cwd)
    return swrk.serve(fd, log, role="service", criu=criu, peeked=peeked)


def _answer(fd: int, peeked: transport.Peeked, answer: protocol.Answer, log: Log) -> Status:
    log.warning(answer.why + swrk.deliver(fd, peeked, answer))
    return answer.status


def _answer_if_unread(fd: int, errno: int, message: str) -> bool:
    """Answer the client if its request is still queued (nobody answered it yet)."""
    size = transport.queued(fd)
    if not size:
        return False
    try:
        transport.consume(fd, size)
        transport.send(fd, protocol.answer(0, errno, message).payload, wait=False)
    except OSError:
        return False
    return True


def run(fd: int, log: Log, *, criu: str | None, max_request: int, work_timeout: float) -> int:
    """The worker's whole life; returns its exit status (unless CRIU was exec'd).

    The status is for the loop's reaping log only: 0 when it served (or the
    client left), 1 when it answered a refusal or failed.
    """
    signal.signal(signal.SIGALRM, _deadline_passed)
    signal.setitimer(signal.ITIMER_REAL, work_timeout)
    try:
        status = serve_connection(fd, log, criu=criu, max_request=max_request)
        return 0 if status is FINE else 1
    except WorkDeadline:
        signal.setitimer(signal.ITIMER_REAL, 0)
        why = (
            f"the AIO work did not finish within {work_timeout:g} s; "
            "request refused before CRIU started"
        )
        told = _answer_if_unread(fd, _errno.ETIMEDOUT, f"criu-aio service: {why}")
        log.error(f"{why} ({'client told' if told else 'client already answered'})")
        return 1
    except BaseException as err:
        signal.setitimer(signal.ITIMER_REAL, 0)
        told = _answer_if_unread(
            fd, _errno.EIO, "criu-aio service: internal error (see the service's log)"
        )
        log.error(
            f"worker crashed ({'client told' if told else 'client not told'}): "
            f"{crash.one_line(err)}"
        )
        return 1
