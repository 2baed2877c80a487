"""The accept loop of ``criu-aio service``: no client can block it.

How it works. One poll(2) watches:

- the listening socket (non-blocking): every connection is accepted at once,
  its SO_PEERCRED read, and ``admission`` says whether it is held or refused
  (per-uid and service-wide connection limits);
- every connection whose first request has not arrived: when it is readable
  the loop peeks at the datagram's size (MSG_PEEK|MSG_TRUNC|MSG_DONTWAIT):
  a hang-up is closed quietly, an oversized request is answered here, anything
  else queues for a worker. A request whose client has hung up by the time a
  worker is free is dropped: nobody would get the answer, and a fire-and-forget
  flood must not cost a fork (and a CRIU) each;
- one pipe per worker in its AIO phase: the worker holds the write end with
  O_CLOEXEC, so the pipe reads end-of-file when the worker execs CRIU (or
  exits), and from then on the worker has no deadline of ours;
- the SIGCHLD wake-up pipe (``signal.set_wakeup_fd``): workers are reaped
  as soon as they end, whatever ended them.

Between events the loop expires connections (no request within
``request_timeout``: answered and closed; queued past ``queue_timeout``),
kills workers whose AIO phase outlived its deadline (the worker's own timer
answers the client first; SIGKILL is for a worker stuck where no signal
handler runs) and hands ready connections to new workers within the worker
limits. Each of these events is one line in the log.

Descriptors are never switched to non-blocking: O_NONBLOCK belongs to the
open file, which the worker and then CRIU share; the loop passes
MSG_DONTWAIT on each call instead.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import select
import signal
import socket
import struct
import time

from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import protocol, service_worker
from criu_aio_plugin.rpc.admission import Admission, Limits, Peer, Refusal

_UCRED = struct.Struct("3i")
_ACCEPT_BATCH = 64
_MAX_POLL_WAIT = 5.0  # seconds; events wake the loop sooner
_FD_RESERVE = 64  # descriptors kept free of connections (log, pipes, workers' forks)
_ACCEPT_PAUSE = 0.5  # after EMFILE/ENFILE: stop accepting this long


class Loop:
    """The service's accept loop (``serve_forever``); its workers run ``service_worker``."""

    def __init__(
        self,
        listener: int,
        log: Log,
        *,
        criu: str | None,
        limits: Limits,
        max_request: int,
    ) -> None:
        self.log = log
        self.criu = criu
        self.max_request = max_request
        self.admission = Admission(limits)
        self.listener = socket.socket(fileno=listener)
        self.listener.setblocking(False)  # the listener is ours alone
        self.socks: dict[int, socket.socket] = {}  # connections held, by descriptor
        self.pipes: dict[int, int] = {}  # a worker's pipe (read end) -> its pid
        self.poller = select.poll()
        self.poller.register(self.listener.fileno(), select.POLLIN)
        self._accept_paused_until = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self._wake_r, select.POLLIN)

    @property
    def limits(self) -> Limits:
        return self.admission.limits

    # -- the loop ---------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until a signal handler raises (SIGTERM, SIGINT); then close what is held."""
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        old_chld = signal.signal(signal.SIGCHLD, _no_op)
        try:
            while True:
                self.step()
        finally:
            signal.signal(signal.SIGCHLD, old_chld)
            signal.set_wakeup_fd(old_wakeup)
            self.close()

    def step(self, max_wait: float = _MAX_POLL_WAIT) -> None:
        """One round: wait for an event or a deadline, then handle everything due."""
        now = time.monotonic()
        wait = max_wait
        deadline = self.admission.next_deadline()
        if deadline is not None:
            wait = min(wait, max(deadline - now, 0.0))
        if self._accept_paused_until > now:
            wait = min(wait, self._accept_paused_until - now)
        events = self.poller.poll(int(wait * 1000) + 1)
        for fd, _ in events:
            if fd == self.listener.fileno():
                self._accept_all()
            elif fd == self._wake_r:
                _drain(self._wake_r)
            elif fd in self.pipes:
                self._left_aio_phase(fd)
            elif fd in self.socks:
                self._first_datagram(fd)
        self._reap()
        now = time.monotonic()
        if self._accept_paused_until and self._accept_paused_until <= now:
            self._accept_paused_until = 0.0
            self.poller.register(self.listener.fileno(), select.POLLIN)
        for refusal in self.admission.expired(now):
            self._refuse(refusal, queued=False)
        self._kill_overdue(now)
        self._dispatch()

    def close(self) -> None:
        """Close every connection still held and the loop's own descriptors (not the listener)."""
        for key in list(self.socks):
            self.socks.pop(key).close()
        for fd in list(self.pipes):
            os.close(fd)
        self.pipes.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1
        self.listener.detach()

    # -- connections --------------------------------------------------------------

    def _accept_all(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (_errno.EMFILE, _errno.ENFILE, _errno.ENOBUFS, _errno.ENOMEM):
                    self.log.error(
                        f"accept failed: {err.strerror}; not accepting for {_ACCEPT_PAUSE:g} s"
                    )
                    self.poller.unregister(self.listener.fileno())
                    self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                    return
                continue  # ECONNABORTED and the like: that client is gone
            self._admit(conn)

    def _admit(self, conn: socket.socket) -> None:
        try:
            pid, uid, _ = _UCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
        except OSError:
            conn.close()
            return
        key = conn.fileno()
        self.socks[key] = conn
        refusal = self.admission.accept(key, Peer(pid, uid), time.monotonic())
        if refusal is not None:
            self.socks.pop(key)
            _answer(conn, refusal.errno, refusal.message)
            conn.close()
            self.log.warning(refusal.log_line)
            return
        self.poller.register(key, select.POLLIN)

    def _first_datagram(self, key: int) -> None:
        """The connection *key* is readable: hang-up, an oversized request, or a request."""
        sock = self.socks[key]
        conn = self.admission.conns[key]
        try:
            size = sock.recv_into(
                bytearray(1), 1, socket.MSG_PEEK | socket.MSG_TRUNC | socket.MSG_DONTWAIT
            )
        except BlockingIOError:
            return
        except OSError:
            size = 0
        self.poller.unregister(key)
        if size == 0:
            self.admission.drop(key)
            self.socks.pop(key).close()
            self.log.debug(f"pid {conn.peer.pid} uid {conn.peer.uid} closed without a request")
            return
        if size > self.max_request:
            why = f"request of {size} bytes is larger than the service's limit of " + str(
                self.max_request
            )
            refusal = Refusal(key, conn.peer, _errno.EBADMSG, f"malformed request: {why}")
            self._refuse(refusal, queued=True)
            return
        self.admission.readable(key, time.monotonic())

    def _refuse(self, refusal: Refusal, *, queued: bool) -> None:
        """Answer and close a held connection (its request, if any, is dropped unread)."""
        key = refusal.key
        conn = self.admission.drop(key)
        sock = self.socks.pop(key)
        if conn.ready_since is None and not queued:
            self.poller.unregister(key)
        if queued or conn.ready_since is not None:
            with contextlib.suppress(OSError):
                sock.recv_into(bytearray(1), 1, socket.MSG_TRUNC | socket.MSG_DONTWAIT)
        _answer(sock, refusal.errno, refusal.message)
        sock.close()
        self.log.warning(refusal.log_line)

    # -- workers --------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            conn = self.admission.next_ready()
            if conn is None:
                return
            sock = self.socks[conn.key]
            if _hung_up(sock):
                self.admission.drop(conn.key)
                self.socks.pop(conn.key).close()
                self.log.info(
                    f"pid {conn.peer.pid} uid {conn.peer.uid} hung up before its request "
                    "was served: dropped (nobody to answer)"
                )
                continue
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            try:
                pid = os.fork()
            except OSError as err:
                os.close(read_end)
                os.close(write_end)
                self.admission.drop(conn.key)
                self.socks.pop(conn.key)
                _answer(sock, _errno.EAGAIN, "criu-aio service: cannot start a worker; retry later")
                sock.close()
                self.log.error(
                    f"cannot fork a worker for pid {conn.peer.pid} uid {conn.peer.uid}: "
                    f"{err.strerror}; refused"
                )
                continue
            if pid == 0:  # pragma: no cover - the worker (its exit status is what tests see)
                code = 1
                try:
                    os.close(read_end)
                    code = self._become_worker(sock)
                finally:
                    os._exit(code)
            os.close(write_end)
            self.admission.started(conn.key, pid, time.monotonic())
            self.socks.pop(conn.key).close()
            self.pipes[read_end] = pid
            self.poller.register(read_end, select.POLLIN)

    def _become_worker(self, sock: socket.socket) -> int:  # pragma: no cover - in the worker
        """In the forked child: drop the loop's state, then serve *sock*."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        mine = sock.fileno()
        for key, other in self.socks.items():
            if key != mine:
                other.close()
        for fd in [*self.pipes, self._wake_r, self._wake_w, self.listener.fileno()]:
            os.close(fd)
        self.listener.detach()
        fd = sock.detach()
        return service_worker.run(
            fd,
            self.log,
            criu=self.criu,
            max_request=self.max_request,
            work_timeout=self.limits.work_timeout,
        )

    def _left_aio_phase(self, read_end: int) -> None:
        pid = self.pipes.pop(read_end)
        self.poller.unregister(read_end)
        os.close(read_end)
        self.admission.exec_seen(pid)

    def _reap(self) -> None:
        while self.admission.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.admission.exited(pid)
            for read_end, owner in list(self.pipes.items()):
                if owner == pid:
                    self._left_aio_phase(read_end)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            who = f"worker {pid} (pid {worker.peer.pid} uid {worker.peer.uid})"
            if code < 0 and not worker.killed:
                self.log.error(f"{who} died of signal {-code}")
            else:
                self.log.debug(f"{who} exited: {code}")

    def _kill_overdue(self, now: float) -> None:
        for worker in self.admission.overdue(now):
            worker.killed = True
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.log.error(
                f"worker {worker.pid} (pid {worker.peer.pid} uid {worker.peer.uid}) still in "
                f"its AIO work after {now - worker.started:.1f} s: killed"
            )


def _answer(sock: socket.socket, errno: int, message: str) -> None:
    """Send a criu_resp{success=false}; a client that does not take it is not waited for."""
    with contextlib.suppress(OSError):
        sock.send(protocol.answer(0, errno, message).payload, socket.MSG_DONTWAIT)


def _hung_up(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return any(revents & (select.POLLHUP | select.POLLERR) for _, revents in poller.poll(0))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _no_op(signum: int, frame: object) -> None:
    """SIGCHLD's handler: its only job is to make set_wakeup_fd wake poll()."""


def fd_budget(wanted: int) -> int:
    """How many connections the descriptor limit allows (raising the soft limit if needed)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _FD_RESERVE))
