"""Who gets a worker of ``criu-aio service``, and when: the accept loop's bookkeeping.

Pure state, no I/O (the loop in ``service_loop`` does the sockets, forks and
signals, and asks this class what to do). The rules:

- Every connection is accepted at once; the loop never blocks on a client.
  What a connection costs before its request arrives is one descriptor in
  the service, never a worker.
- A connection is *waiting* until its first datagram (or its end) is
  readable, then *ready*. It waits at most ``request_timeout`` seconds
  (slowloris: a client that connects and sends nothing), and queues for a
  worker at most ``queue_timeout`` seconds.
- Only ready connections get a worker: at most ``max_workers`` at once, at
  most ``max_workers_per_uid`` for one uid, handed out round robin over the
  uids with ready connections, so one uid's stuck work cannot starve another.
- A worker is in its *AIO phase* from fork until it answers or execs CRIU; that
  phase has a deadline (the worker's own timer answers the client at
  ``work_timeout``; the loop kills it ``kill_grace`` seconds later, e.g. when it
  is stuck in a system call no signal interrupts). After the exec it is CRIU,
  whose work (a restore, a page server, a ``keep_open`` session) has no
  deadline of ours, but it still counts against its uid.
- One uid holds at most ``max_connections_per_uid`` connections (waiting,
  ready or with a worker); the service at most ``max_connections``.
  Connections beyond are answered with a refusal and closed at once.

So idle or stuck clients of one uid cost that uid its own share; another uid
is served while fewer than ``max_workers / max_workers_per_uid`` uids are
stuck at their cap. Root (uid 0) is held only to the service-wide limits: it
is the runtime (containerd, CRI-O) restoring many containers at once, and it
could stop the service anyway.
"""

from __future__ import annotations

import errno as _errno

from criu_aio_plugin.values import Record, Value

ROOT = 0


class Limits(Value):
    """The service's bounds (``criu-aio service --help`` names the options)."""

    max_workers: int = 16
    max_workers_per_uid: int = 4
    max_connections: int = 1024
    max_connections_per_uid: int = 32
    request_timeout: float = 10.0
    queue_timeout: float = 120.0
    work_timeout: float = 60.0
    kill_grace: float = 5.0


class Peer(Value):
    """SO_PEERCRED of a connection, as accepted."""

    pid: int
    uid: int


class Conn(Record):
    """A connection the service holds (not yet handed to a worker)."""

    key: int  # the loop's handle (its descriptor)
    peer: Peer
    accepted: float
    ready_since: float | None = None


class Worker(Record):
    """A forked worker: in its AIO phase until ``exec_seen``, then CRIU."""

    pid: int
    peer: Peer
    started: float
    exec_seen: bool = False
    killed: bool = False


class Refusal(Value):
    """A connection the loop answers (criu_resp{success=false}) and closes itself."""

    key: int
    peer: Peer
    errno: int
    reason: str
    verb: str = "refused"

    @property
    def message(self) -> str:
        """The client's cr_errmsg."""
        return f"criu-aio service: {self.reason}"

    @property
    def log_line(self) -> str:
        """The service log's line for this event."""
        return f"{self.verb} pid {self.peer.pid} uid {self.peer.uid}: {self.reason}"


class Admission:
    """The loop's bookkeeping of connections and workers; all times are monotonic seconds."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.conns: dict[int, Conn] = {}
        self.workers: dict[int, Worker] = {}
        self._ready: dict[int, list[int]] = {}  # uid -> keys, oldest first
        self._turn: list[int] = []  # uids in round-robin order
        self._held: dict[int, int] = {}  # uid -> connections + workers
        self._working: dict[int, int] = {}  # uid -> workers

    # -- counts ---------------------------------------------------------------

    def held(self, uid: int) -> int:
        return self._held.get(uid, 0)

    def working(self, uid: int) -> int:
        return self._working.get(uid, 0)

    @property
    def total_held(self) -> int:
        return len(self.conns) + len(self.workers)

    def waiting_keys(self) -> list[int]:
        """Connections whose first request has not arrived (the loop polls them)."""
        return [c.key for c in self.conns.values() if c.ready_since is None]

    def _count(self, table: dict[int, int], uid: int, delta: int) -> None:
        value = table.get(uid, 0) + delta
        if value:
            table[uid] = value
        else:
            table.pop(uid, None)

    # -- connections ------------------------------------------------------------

    def accept(self, key: int, peer: Peer, now: float) -> Refusal | None:
        """A new connection: hold it, or the refusal to answer it with."""
        lim = self.limits
        if peer.uid != ROOT and self.held(peer.uid) >= lim.max_connections_per_uid:
            why = (
                f"uid {peer.uid} already holds {lim.max_connections_per_uid} connections "
                "(the per-user limit); close some or retry later"
            )
            return Refusal(key, peer, _errno.EUSERS, why)
        if self.total_held >= lim.max_connections:
            why = f"{lim.max_connections} connections held (the service's limit); retry later"
            return Refusal(key, peer, _errno.EAGAIN, why)
        self.conns[key] = Conn(key=key, peer=peer, accepted=now)
        self._count(self._held, peer.uid, 1)
        return None

    def readable(self, key: int, now: float) -> None:
        """The first datagram of *key* arrived (or the client hung up): queue it."""
        conn = self.conns[key]
        if conn.ready_since is not None:
            return
        conn.ready_since = now
        uid = conn.peer.uid
        if uid not in self._ready:
            self._ready[uid] = []
            self._turn.append(uid)
        self._ready[uid].append(key)

    def drop(self, key: int) -> Conn:
        """Forget connection *key* (closed, refused or handed to a worker)."""
        conn = self.conns.pop(key)
        self._count(self._held, conn.peer.uid, -1)
        queue = self._ready.get(conn.peer.uid)
        if queue is not None and key in queue:
            queue.remove(key)
            if not queue:
                del self._ready[conn.peer.uid]
                self._turn.remove(conn.peer.uid)
        return conn

    def next_ready(self) -> Conn | None:
        """The ready connection to give the next worker to, or None (no slot or none ready).

        Round robin over uids: the uid served is moved to the back of the turn.
        """
        lim = self.limits
        if len(self.workers) >= lim.max_workers:
            return None
        for i, uid in enumerate(self._turn):
            if uid != ROOT and self.working(uid) >= lim.max_workers_per_uid:
                continue
            key = self._ready[uid][0]
            self._turn.append(self._turn.pop(i))
            return self.conns[key]
        return None

    def expired(self, now: float) -> list[Refusal]:
        """Connections past their deadline (no request, or no worker in time)."""
        lim = self.limits
        out = []
        for conn in self.conns.values():
            peer = conn.peer
            if conn.ready_since is None:
                if now - conn.accepted >= lim.request_timeout:
                    why = f"no request within {lim.request_timeout:g} s"
                    out.append(Refusal(conn.key, peer, _errno.ETIMEDOUT, why, "closed idle"))
            elif now - conn.ready_since >= lim.queue_timeout:
                why = f"no worker free within {lim.queue_timeout:g} s; retry later"
                out.append(Refusal(conn.key, peer, _errno.EBUSY, why))
        return out

    # -- workers ------------------------------------------------------------------

    def started(self, key: int, pid: int, now: float) -> Worker:
        """Connection *key* went to worker *pid* (the connection itself is dropped)."""
        conn = self.drop(key)
        worker = Worker(pid=pid, peer=conn.peer, started=now)
        self.workers[pid] = worker
        self._count(self._held, conn.peer.uid, 1)
        self._count(self._working, conn.peer.uid, 1)
        return worker

    def exec_seen(self, pid: int) -> None:
        """Worker *pid* left its AIO phase (exec'd CRIU, or is exiting)."""
        worker = self.workers.get(pid)
        if worker is not None:
            worker.exec_seen = True

    def exited(self, pid: int) -> Worker | None:
        worker = self.workers.pop(pid, None)
        if worker is not None:
            self._count(self._held, worker.peer.uid, -1)
            self._count(self._working, worker.peer.uid, -1)
        return worker

    def overdue(self, now: float) -> list[Worker]:
        """Workers still in their AIO phase past work_timeout + kill_grace (to kill)."""
        limit = self.limits.work_timeout + self.limits.kill_grace
        return [
            w
            for w in self.workers.values()
            if not w.exec_seen and not w.killed and now - w.started >= limit
        ]

    def next_deadline(self) -> float | None:
        """The earliest time something expires (for the loop's poll timeout)."""
        lim = self.limits
        times = []
        for conn in self.conns.values():
            if conn.ready_since is None:
                times.append(conn.accepted + lim.request_timeout)
            else:
                times.append(conn.ready_since + lim.queue_timeout)
        for w in self.workers.values():
            if not w.exec_seen and not w.killed:
                times.append(w.started + lim.work_timeout + lim.kill_grace)
        return min(times) if times else None
