"""The live kernel: io_setup on the running kernel, without paying for teardown.

How it works. Creating a context costs ~12 us; destroying one costs ~32 ms,
because io_destroy waits for an RCU grace period (fs/aio.c: kill_ioctx, then
wait_for_completion), and a process that exits holding contexts waits the same
way in exit_aio (all its contexts at once: ~39 ms for 30). A prober that
destroys each context in line is three orders of magnitude slower, and one that
creates contexts in the calling process moves that wait to the caller's exit or
exec (exec_mmap -> mmput -> exit_aio), which for ``criu-aio swrk`` is the restore's
critical path.

So probes run in a *probe worker*: a grandchild made by a double fork. The
intermediate child exits at once and is reaped here, so the worker is never our
child: CRIU, which this process may exec next, treats an unknown child exiting
as an error during restore. The worker reads batches of nr_req values from a
pipe, calls io_setup for each, reads the ring's header ``nr`` and cross-checks
it with the ring's VMA in /proc/self/maps, and writes the results back. It never
destroys a context; it exits when its request pipe reaches EOF (we close it, or
we exit or exec: the pipe is close-on-exec), and the kernel tears its contexts
down then.

The budget. Every live context charges its requested n to fs.aio-nr until
kill_ioctx, which runs at the start of the teardown (exit_aio calls kill_ioctx
for every context, and kill_ioctx calls aio_nr_sub before the RCU wait). The
worker's reply pipe reaches EOF only after exit_mm (do_exit closes files after
the mm is gone), so EOF proves the teardown is over; measured here, fs.aio-nr
drops about 1 ms after we close the request pipe and EOF comes about 35 ms
later. ``settle(need)`` does anything only when fs.aio-max-nr minus fs.aio-nr is
below what the caller will need next (a restore's rings): it retires the worker
and polls fs.aio-nr until *need* fits (EOF bounds the wait), so the common path
never waits and the rare one waits ~1 ms, not the RCU grace period. A probe that
gets EAGAIN while our own workers hold budget does the same and retries once,
so EAGAIN reported to the estimator means the host's budget.
``charge_limit`` caps what probes may hold at once (half the headroom seen at
the first probe), so a long ``check`` never starves other processes.
"""

from __future__ import annotations

import errno as _errno
import os
import struct
import time

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.kernel import host
from criu_aio_plugin.kernel.arithmetic import AIO_RING_HEADER, AIO_RING_MAGIC, IO_EVENT_SIZE
from criu_aio_plugin.kernel.interface import HostFacts, RingProbe

# ctypes (the syscalls module) loads with the first probe worker: a restore
# whose rings were all confirmed earlier this boot needs no probe and no ctypes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from criu_aio_plugin.kernel.syscalls import AioSyscalls

# Worker wire format (native, both ends are this module in one process image):
#   request : u32 count, then count x u64 nr_req
#   hello   : i32 worker pid (once, first thing the worker writes)
#   reply   : count x (u64 nr_req, i64 errno, u64 header nr, u64 magic, u64 vma length)
_COUNT = struct.Struct("=I")
_NR = struct.Struct("=Q")
_HELLO = struct.Struct("=i")
_REPLY = struct.Struct("=QqQQQ")
_MAX_BATCH = 4096
TEARDOWN_TIMEOUT = 10.0  # seconds; RCU teardown takes ~32-40 ms here
_POLL_STEP = 0.0005  # seconds between fs.aio-nr looks while waiting for budget


def _read_exact(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError(f"pipe closed with {left} of {size} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _aio_vmas() -> dict[int, int]:
    """start address -> length of every AIO ring mapped in this process.

    Raw os.open/os.read: the worker runs after a fork of a process that may have
    had other threads, so it avoids anything that takes Python-level locks.
    """
    fd = os.open("/proc/self/maps", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    vmas: dict[int, int] = {}
    for line in b"".join(chunks).splitlines():
        if b"[aio]" not in line:
            continue
        lo, _, hi = line.split(b" ", 1)[0].partition(b"-")
        start = int(lo, 16)
        vmas[start] = int(hi, 16) - start
    return vmas


_LOADED: list[AioSyscalls] = []  # one instance per process (no functools on this path)


def _syscalls() -> AioSyscalls:
    # Made in the parent before the first fork, so the worker inherits a loaded libc.
    if not _LOADED:
        from criu_aio_plugin.kernel.syscalls import AioSyscalls

        _LOADED.append(AioSyscalls())
    return _LOADED[0]


def _worker_main(req_r: int, rep_w: int) -> None:
    """The probe worker's loop (runs in the grandchild; never returns normally)."""
    from criu_aio_plugin.kernel.syscalls import read_ring_header  # loaded by _syscalls()

    sysc = _syscalls()
    _write_all(rep_w, _HELLO.pack(os.getpid()))
    # Warm up while the caller is busy elsewhere: the first pass over this code
    # after fork takes copy-on-write faults that would otherwise land on the
    # first batch's round trip.
    _REPLY.pack(0, 0, 0, 0, _aio_vmas().get(0, 0))
    while True:
        try:
            (count,) = _COUNT.unpack(_read_exact(req_r, _COUNT.size))
        except EOFError:
            return
        raw = _read_exact(req_r, count * _NR.size)
        made: list[tuple[int, int, int, int]] = []  # nr_req, errno, ctx, header nr
        for i in range(count):
            (n,) = _NR.unpack_from(raw, i * _NR.size)
            try:
                ctx = sysc.io_setup(n)
            except OSError as failure:
                made.append((n, failure.errno or _errno.EIO, 0, 0))
                continue
            made.append((n, 0, ctx, 0))
        vmas = _aio_vmas() if any(e == 0 for _, e, _, _ in made) else {}
        out = bytearray()
        for n, code, ctx, _ in made:
            if code:
                out += _REPLY.pack(n, code, 0, 0, 0)
                continue
            _id, nr, magic = read_ring_header(ctx)
            out += _REPLY.pack(n, 0, nr, magic, vmas.get(ctx, 0))
        _write_all(rep_w, bytes(out))


class _Worker:
    """A probe worker's state (mutable; a plain class keeps dataclasses off the restore path)."""

    __slots__ = ("charge", "contexts", "intermediate", "pid", "rep_r", "req_w")

    def __init__(self, pid: int, req_w: int, rep_r: int, intermediate: int = 0) -> None:
        self.pid = pid  # the worker's pid once it said hello; until then the intermediate's
        self.req_w = req_w
        self.rep_r = rep_r
        self.charge = 0  # requested events its live contexts hold in fs.aio-nr
        self.contexts = 0
        self.intermediate = intermediate  # the intermediate child, until reaped (0 after)


def _spawn_worker() -> _Worker:
    """Double-fork a probe worker (``_finish_spawn`` reaps the intermediate child)."""
    _syscalls()
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # intermediate child
        code = 0
        try:
            if os.fork() == 0:  # the worker
                try:
                    os.close(req_w)
                    os.close(rep_r)
                    keep = sorted((req_r, rep_w))
                    # Drop every inherited descriptor (an RPC client's socket above
                    # all: it must see EOF when CRIU is done, not when we are).
                    os.closerange(3, keep[0])
                    os.closerange(keep[0] + 1, keep[1])
                    os.closerange(keep[1] + 1, max(os.sysconf("SC_OPEN_MAX"), 1 << 20))
                    _worker_main(req_r, rep_w)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(req_r)
    os.close(rep_w)
    return _Worker(pid=pid, req_w=req_w, rep_r=rep_r, intermediate=pid)


def _finish_spawn(w: _Worker) -> None:
    """Reap the intermediate child and read the worker's hello (its pid).

    Split from ``_spawn_worker`` so that ``prestart`` pays for one fork only and
    the intermediate's own fork and exit overlap with the caller's work.
    """
    if not w.intermediate:
        return
    try:
        _pid, status = os.waitpid(w.intermediate, 0)
        w.intermediate = 0
        if os.waitstatus_to_exitcode(status) != 0:
            raise KernelError("could not start the AIO probe worker (fork failed)")
        (w.pid,) = _HELLO.unpack(_read_exact(w.rep_r, _HELLO.size))
    except (OSError, EOFError) as err:
        raise KernelError(f"AIO probe worker did not start: {err}") from err


def _wait_eof(fd: int, deadline: float) -> bool:
    """Drain *fd* until EOF (the worker is gone) or *deadline*; True on EOF.

    A deadline already past still polls once without blocking.
    """
    import select  # only with a worker to wait for: never on a warm restore

    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        left = max(0.0, deadline - time.monotonic())
        if poller.poll(int(left * 1000)):
            if not os.read(fd, 4096):
                return True
            continue  # a stray reply byte; keep draining
        if left <= 0:
            return False


class LiveKernel:
    """The running kernel, probed through a double-forked worker (see module doc)."""

    def __init__(self, charge_limit: int | None = None) -> None:
        self._worker: _Worker | None = None
        self._retired: list[_Worker] = []
        self._charge_limit = charge_limit
        self.probes = 0  # io_setup calls made (benchmarks and tests read it)
        self.workers_started = 0
        self.teardown_wait = 0.0  # seconds spent waiting for teardown, in total

    # -- Kernel protocol -------------------------------------------------
    @property
    def name(self) -> str:
        return "live"

    @property
    def is_live(self) -> bool:
        return True

    def facts(self) -> HostFacts:
        return host.host_facts()

    def probe(self, nr_req: int) -> RingProbe:
        return self.probe_many([nr_req])[0]

    def probe_many(self, nr_reqs: Sequence[int]) -> list[RingProbe]:
        # Chunks keep each round trip under _MAX_BATCH values and under the
        # charge limit, so one big batch never holds more budget than allowed.
        results: list[RingProbe] = []
        chunk: list[int] = []
        total = 0
        limit = self._limit()
        for n in nr_reqs:
            if chunk and (len(chunk) >= _MAX_BATCH or total + n > limit):
                results += self._probe_chunk(chunk)
                chunk, total = [], 0
            chunk.append(n)
            total += n
        if chunk:
            results += self._probe_chunk(chunk)
        return results

    def close(self) -> None:
        """Retire the worker; its contexts go away without anyone waiting here."""
        self._retire()
        self._reap_retired(wait=False)

    # -- budget ----------------------------------------------------------
    @property
    def charge(self) -> int:
        """Requested events our probe contexts may still hold in fs.aio-nr."""
        live = self._worker.charge if self._worker else 0
        return live + sum(w.charge for w in self._retired)

    def settle(self, need: int) -> float:
        """Make room for *need* requested events; wait for teardown only if needed."""
        if self._headroom() >= need:
            return 0.0
        return self._free_budget(need)

    def prestart(self) -> None:
        """Start the probe worker now: one fork here, the rest overlaps the caller's work.

        The caller must ``close()`` (or probe) before it execs, so that the
        intermediate child is reaped.
        """
        if self._worker is None:
            self._worker = _spawn_worker()
            self.workers_started += 1

    # -- internals -------------------------------------------------------
    def _headroom(self) -> int:
        return host.read_aio_max_nr() - host.read_aio_nr()

    def _limit(self) -> int:
        if self._charge_limit is None:
            self._charge_limit = max(1, (self._headroom() + self.charge) // 2)
        return self._charge_limit

    def _free_budget(self, need: int | None = None) -> float:
        """Retire the worker and wait until *need* events fit (None: full teardown).

        fs.aio-nr drops as soon as a worker's exit reaches kill_ioctx (about a
        millisecond after we close its pipe, measured here), long before the
        RCU wait ends (~35 ms): poll the headroom, not just the teardown.
        """
        self._retire()
        started = time.monotonic()
        deadline = started + TEARDOWN_TIMEOUT
        while self._retired:
            if need is not None and self._headroom() >= need:
                break
            now = time.monotonic()
            if now >= deadline:
                self._reap_retired(wait=True)  # raises, naming the stuck workers
                break
            self._reap_until(min(deadline, now + _POLL_STEP))
        waited = time.monotonic() - started
        self.teardown_wait += waited
        return waited

    def _retire(self) -> None:
        w = self._worker
        if w is None:
            return
        self._worker = None
        os.close(w.req_w)  # the worker sees EOF and exits; teardown starts now
        if w.intermediate:  # never leave a child behind for CRIU to trip over
            try:
                _finish_spawn(w)
            except KernelError:
                os.close(w.rep_r)
                return
        self._retired.append(w)

    def _reap_until(self, deadline: float) -> None:
        """Wait until *deadline* or until some retired worker is gone; forget those gone."""
        import select

        poller = select.poll()
        by_fd = {w.rep_r: w for w in self._retired}
        for fd in by_fd:
            poller.register(fd, select.POLLIN | select.POLLHUP)
        left = max(0.0, deadline - time.monotonic())
        for fd, _event in poller.poll(int(left * 1000)):
            if not os.read(fd, 4096):
                os.close(fd)
                self._retired.remove(by_fd[fd])

    def _reap_retired(self, wait: bool) -> float:
        """Forget retired workers whose teardown finished; with *wait*, all of them."""
        started = time.monotonic()
        deadline = started + TEARDOWN_TIMEOUT
        alive: list[_Worker] = []
        for w in self._retired:
            done = _wait_eof(w.rep_r, deadline if wait else started)
            if done:
                os.close(w.rep_r)
            else:
                alive.append(w)
        self._retired = alive
        waited = time.monotonic() - started if wait else 0.0
        self.teardown_wait += waited
        if wait and alive:
            raise KernelError(
                f"AIO probe worker(s) {', '.join(str(w.pid) for w in alive)} did not "
                f"tear down their contexts within {TEARDOWN_TIMEOUT:.0f} s"
            )
        return waited

    def _probe_chunk(self, nrs: list[int]) -> list[RingProbe]:
        # Keep what probes hold under the charge limit: retire a worker (without
        # waiting) before a batch would push it over.
        if self._worker is not None and self._worker.charge + sum(nrs) > self._limit():
            self._retire()
            self._reap_retired(wait=False)
        results = self._roundtrip(nrs)
        again = [i for i, r in enumerate(results) if r.errno == _errno.EAGAIN]
        if again and self.charge:
            # Our own probes may be what fills fs.aio-nr: free them and retry once.
            self._free_budget(sum(nrs[i] for i in again))
            retry = self._roundtrip([nrs[i] for i in again])
            for i, r in zip(again, retry, strict=True):
                results[i] = r
        return results

    def _roundtrip(self, nrs: list[int]) -> list[RingProbe]:
        self.prestart()
        w = self._worker
        assert w is not None
        if w.intermediate:
            try:
                _finish_spawn(w)
            except KernelError:
                self._worker = None
                os.close(w.req_w)
                os.close(w.rep_r)
                raise
        payload = _COUNT.pack(len(nrs)) + b"".join(_NR.pack(n & 0xFFFFFFFF) for n in nrs)
        try:
            _write_all(w.req_w, payload)
            raw = _read_exact(w.rep_r, _REPLY.size * len(nrs))
        except (OSError, EOFError) as err:
            self._retire()
            raise KernelError(f"AIO probe worker {w.pid} died: {err}") from err
        self.probes += len(nrs)
        out: list[RingProbe] = []
        for i in range(len(nrs)):
            n, code, nr, magic, vma_len = _REPLY.unpack_from(raw, i * _REPLY.size)
            if code:
                out.append(RingProbe(nr_req=nrs[i], errno=code))
                continue
            w.charge += n
            w.contexts += 1
            out.append(self._checked(nrs[i], nr, magic, vma_len))
        return out

    @staticmethod
    def _checked(nr_req: int, nr: int, magic: int, vma_len: int) -> RingProbe:
        # The header's nr is what CRIU's restorer compares; the VMA length is what
        # CRIU dumped as ring_len. They must describe the same ring.
        if magic != AIO_RING_MAGIC:
            raise KernelError(
                f"io_setup({nr_req}) made a ring whose header magic is {magic:#x}, "
                f"not {AIO_RING_MAGIC:#x}"
            )
        if vma_len == 0:
            raise KernelError(f"io_setup({nr_req}) made a ring absent from /proc/self/maps")
        if (vma_len - AIO_RING_HEADER) // IO_EVENT_SIZE != nr:
            raise KernelError(
                f"io_setup({nr_req}): ring header says nr={nr} but its mapping is "
                f"{vma_len} bytes ({(vma_len - AIO_RING_HEADER) // IO_EVENT_SIZE} slots)"
            )
        return RingProbe(nr_req=nr_req, ring_len=vma_len, nr=nr)
