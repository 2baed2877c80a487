"""``criu-aio service``: a ``criu service``-style socket whose clients get the AIO work.

How it works. The service listens on an AF_UNIX SOCK_SEQPACKET socket, its own
(``--address PATH``, mode 0666 like ``criu service``) or one systemd passes
(socket activation: LISTEN_PID/LISTEN_FDS, descriptor 3). Each connection is
served by a forked worker, at most ``--max-workers`` at once (further clients
wait in the listen backlog). The worker:

1. peeks at the first request; one larger than ``--max-request`` or not a
   criu_req is answered with criu_resp{success=false} instead of crashing;
2. moves to the client's working directory (/proc/<peer>/cwd), so that a
   relative images_dir means what the client meant;
3. refuses what ``criu service`` refuses (rst_sibling, inherit_fd, a page
   server fd: CRIU allows them only in swrk mode, and the worker we exec *is*
   in swrk mode);
4. for RESTORE, does the AIO work *as the client* (SO_PEERCRED uid/gid and
   SO_PEERGROUPS as effective ids; see ``images_access``), so it can rewrite
   only what the client could write;
5. execs ``criu swrk <conn fd>``: the real CRIU serves the connection. CRIU
   then sees the client as its SO_PEERCRED peer, exactly as a worker of
   ``criu service`` does (it resolves images_dir_fd in the client's fd table).

The command line (``criu-aio service``) is ``criu_aio_plugin.cli.service``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

from criu_aio_plugin.errors import ClientError, CriuAioError
from criu_aio_plugin.rpc import images_access, protocol, swrk, transport
from criu_aio_plugin.rpc.log import Log
from criu_aio_plugin.status import ERROR, FINE, Status

SD_LISTEN_FDS_START = 3
DEFAULT_MAX_WORKERS = 8
DEFAULT_MAX_REQUEST = 64 * 1024  # CRIU's requests are a few hundred bytes


def systemd_socket(environ: dict[str, str] | None = None) -> int | None:
    """The listening socket systemd passed (sd_listen_fds), or None.

    The variables are removed, as sd_listen_fds(1) does, so that no CRIU worker
    mistakes them for its own.
    """
    env = os.environ if environ is None else environ
    pid, fds = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if pid is None or fds is None:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not pid.isdigit() or int(pid) != os.getpid():
        return None
    if fds != "1":
        raise ClientError(f"systemd passed {fds} sockets; criu-aio service takes exactly one")
    fd = SD_LISTEN_FDS_START
    transport.check_seqpacket(fd)
    os.set_inheritable(fd, False)
    return fd


def bind_socket(address: str) -> socket.socket:
    """Bind and listen on *address* like ``criu service`` (stale socket removed, 0666)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        sock.bind(address)
        os.chmod(address, 0o666)
        sock.listen(16)
    except OSError as err:
        sock.close()
        raise ClientError(f"cannot listen on {address}: {err.strerror}", errno=err.errno) from err
    return sock


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
        transport.consume(fd, max_request)
        transport.send(fd, answer.payload)
        log.warning(answer.why)
        return ERROR
    peer = transport.peer_cred(fd)
    try:
        cwd = images_access.open_peer_cwd(peer)
    except ClientError as err:
        answer = protocol.answer(0, err.errno, f"criu-aio service: {err}")
        return _answer(fd, peeked, answer, log)
    try:
        os.fchdir(cwd)
    finally:
        os.close(cwd)
    log.info(f"connection from pid {peer.pid} uid {peer.uid}")
    return swrk.serve(fd, log, role="service", criu=criu, peeked=peeked)


def _answer(fd: int, peeked: transport.Peeked, answer: protocol.Answer, log: Log) -> Status:
    transport.consume(fd, peeked.size)
    transport.send(fd, answer.payload)
    log.warning(answer.why)
    return answer.status


class Service:
    """The accept loop: fork a worker per connection, at most *max_workers* at once."""

    def __init__(
        self, listener: int, log: Log, *, criu: str | None, max_workers: int, max_request: int
    ) -> None:
        self.listener = listener
        self.log = log
        self.criu = criu
        self.max_workers = max_workers
        self.max_request = max_request
        self.workers: set[int] = set()

    def _reap(self, block: bool) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            self.workers.discard(pid)
            self.log.debug(f"worker {pid} exited: {os.waitstatus_to_exitcode(status)}")
            block = False

    def _worker(self, conn: socket.socket) -> Status:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.close(self.listener)
        fd = conn.detach()
        try:
            return serve_connection(fd, self.log, criu=self.criu, max_request=self.max_request)
        except (CriuAioError, OSError) as err:
            self.log.error(f"worker failed: {err}")
            return ERROR

    def serve_forever(self) -> None:
        listener = socket.socket(fileno=self.listener)
        try:
            while True:
                self._reap(block=False)
                if len(self.workers) >= self.max_workers:
                    self._reap(block=True)
                    continue
                try:
                    conn, _ = listener.accept()
                except OSError as err:  # EMFILE, ENOBUFS, ECONNABORTED: keep serving
                    self.log.error(f"accept failed: {err.strerror}")
                    time.sleep(0.1)
                    continue
                try:
                    pid = os.fork()
                except OSError as err:
                    self.log.error(f"cannot fork a worker: {err.strerror}; connection dropped")
                    conn.close()
                    continue
                if pid == 0:
                    code = 1
                    try:
                        listener.detach()
                        # A worker's exit status is for our own reaping log: 0 when
                        # it served (or the client left), 1 when it answered a refusal.
                        code = 0 if self._worker(conn) is FINE else 1
                    finally:
                        os._exit(code)
                self.workers.add(pid)
                conn.close()
        finally:
            listener.detach()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_service(
    log: Log,
    *,
    address: str,
    criu: str | None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    max_request: int = DEFAULT_MAX_REQUEST,
    pidfile: str | None = None,
) -> None:
    """Listen (or take systemd's socket) and serve until SIGTERM/SIGINT."""
    from criu_aio_plugin.rpc import aio_work

    if max_workers < 1 or max_request < 16:
        raise ClientError("--max-workers must be >= 1 and --max-request >= 16")
    # Fail early (and clearly) when there is no real CRIU to hand over to.
    from criu_aio_plugin.criu_locate import find_criu

    find_criu(criu)
    # Import the AIO work's modules once, here, as root: every worker is forked
    # warm, and acting as its client it may not be able to read our installation.
    aio_work.preload()
    listener: socket.socket | None = None
    fd = systemd_socket()
    if fd is None:
        listener = bind_socket(address)
        fd = listener.fileno()
        log.info(f"listening on {address}")
    else:
        log.info(f"listening on the socket systemd passed (fd {fd})")
    if pidfile:
        with open(pidfile, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
    service = Service(fd, log, criu=criu, max_workers=max_workers, max_request=max_request)
    signal.signal(signal.SIGTERM, _stop)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(address)
