"""A kernel reached through criu-aio-probe over a pipe (``--kernel agent:CMD``).

CMD is run as a subprocess (split like a shell would, no shell involved) and
spoken to on its stdin/stdout with the line protocol of agent/PROTOCOL.md
(parsing lives in ``agent_protocol``). CMD may be the agent itself
(``agent:/usr/local/bin/criu-aio-probe``; an empty CMD finds it with
``find_agent``), a remote one (``agent:ssh HOST criu-aio-probe``), or a VM whose
serial port carries the agent (``agent:scripts/kernel-lab boot trixie --cpus 64``).

The subprocess is started on first use, in a session of its own so that closing
kills its whole process group (ssh, timeout, qemu); a finalizer does the same if
the object is dropped without close(). Every wait is bounded: the startup (a
VM boots first) and each reply. Agent death, a timeout or a malformed line
raise KernelError and leave the kernel unusable; nothing is retried blindly.

Probes keep their contexts alive in the agent (io_destroy waits for an RCU
grace period per context); when io_setup fails with EAGAIN while the agent
holds our own contexts, they are released (one grace period for all, see
agent/criu-aio-probe.c) and the probe is tried once more, so our probing never
reads as the host's budget. ``is_live`` is False: answers from another kernel
never justify rewriting images here.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.kernel import agent_protocol as proto
from criu_aio_plugin.kernel.interface import HostFacts, RingProbe

AGENT_NAME = "criu-aio-probe"
AGENT_ENV = "CRIU_AIO_PROBE"
STARTUP_TIMEOUT = 180.0  # a TCG VM with 256 possible CPUs boots in well under a minute
REPLY_TIMEOUT = 60.0
QUIT_TIMEOUT = 5.0  # after `quit`: a local agent exits at once, a lab VM powers off in < 1 s
_MAX_NOISE = 1 << 20  # bytes of boot chatter tolerated before the hello
_MAX_LINE = 4096
# Requests in flight at once: a VM's serial port has no flow control into the
# guest's tty buffer (4 KiB), and pipes would deadlock on large batches.
_PIPELINE = 32


def find_agent() -> str:
    """The local criu-aio-probe: $CRIU_AIO_PROBE, then PATH, then this checkout's build.

    The last is what ``make -C agent`` or scripts/build-agent.sh leaves in a
    source checkout, so tests and the kernel lab find it without installing.
    """
    env = os.environ.get(AGENT_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise KernelError(f"${AGENT_ENV}={env} is not an executable file", errno=_errno.ENOENT)
        return env
    on_path = shutil.which(AGENT_NAME)
    if on_path:
        return on_path
    built = Path(__file__).resolve().parents[2] / "agent" / AGENT_NAME
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    raise KernelError(
        f"{AGENT_NAME} not found (${AGENT_ENV}, PATH, {built})",
        errno=_errno.ENOENT,
        hint="build it with scripts/build-agent.sh (static; copy it to the hosts to profile)",
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the agent's process group (it leads a session of its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # an unkillable (D state) group is beyond what a user process can do
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class AgentKernel:
    """The Kernel protocol over a criu-aio-probe reached by running *command*."""

    def __init__(
        self,
        command: str | Sequence[str] = "",
        *,
        startup_timeout: float = STARTUP_TIMEOUT,
        reply_timeout: float = REPLY_TIMEOUT,
        quit_timeout: float = QUIT_TIMEOUT,
    ) -> None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        self._argv = argv
        self._label = command if isinstance(command, str) else shlex.join(argv)
        self._startup_timeout = startup_timeout
        self._reply_timeout = reply_timeout
        self._quit_timeout = quit_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], AgentKernel] | None = None
        self._buffer = b""
        self._broken: KernelError | None = None
        self._static: HostFacts | None = None
        self._hostname: str | None = None
        self.hello: proto.Reply | None = None
        self.kept = 0  # contexts the agent holds for us
        self.charge = 0  # their requested events, charged to the host's fs.aio-nr
        self._charge_limit: int | None = None

    # -- the Kernel protocol

    @property
    def name(self) -> str:
        return f"agent:{self._label}"

    @property
    def is_live(self) -> bool:
        return False

    def facts(self) -> HostFacts:
        reply = self._request("facts")
        facts = proto.facts_from(reply)
        self._hostname = reply.pairs.get("hostname")
        if self._static is None:
            self._static = facts
        elif (facts.boot_id, facts.kernel_release) != (
            self._static.boot_id,
            self._static.kernel_release,
        ):
            # e.g. ssh reached another host, or the VM restarted behind our back
            was, now = self._static.boot_id, facts.boot_id
            raise self._fail(f"the agent's host changed under us (boot {was} -> {now})")
        return facts

    def probe(self, nr_req: int) -> RingProbe:
        return self.probe_many([nr_req])[0]

    def probe_many(self, nr_reqs: Sequence[int]) -> list[RingProbe]:
        """Probe every value, pipelined: one round trip per chunk of requests."""
        results: list[RingProbe] = []
        for at in range(0, len(nr_reqs), _PIPELINE):
            results += self._probe_chunk(list(nr_reqs[at : at + _PIPELINE]))
        return results

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        try:
            if proc.poll() is None and self._broken is None and proc.stdin is not None:
                # Contexts go with the agent's process; a VM powers off after it.
                proc.stdin.write(b"quit\n")
                proc.stdin.flush()
                proc.stdin.close()
                proc.wait(timeout=self._quit_timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        finally:
            if self._finalizer is not None:
                self._finalizer()  # kills the group if anything is left
            if self._stderr is not None:
                self._stderr.close()
            self.kept = 0
            self.charge = 0

    # -- beyond the protocol

    @property
    def hostname(self) -> str | None:
        """The agent's host's node name (uname), once facts() was asked; for fleet reports."""
        return self._hostname

    def release(self) -> int:
        """Destroy every context the agent holds for us; returns how many."""
        count = proto.released_from(self._request("release"))
        self.kept = 0
        self.charge = 0
        return count

    def settle(self, need: int) -> float:
        """Make room for *need* requested events on the agent's host (BudgetSettler)."""
        if self.facts().aio_headroom >= need or not self.kept:
            return 0.0
        started = time.monotonic()
        self.release()
        return time.monotonic() - started

    def __enter__(self) -> AgentKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport

    def _probe_chunk(self, nrs: list[int]) -> list[RingProbe]:
        # Pipelined requests must not outrun the budget: split where what we
        # hold plus what is in flight would pass the limit, and release there.
        limit = self._limit()
        results: list[RingProbe] = []
        batch: list[int] = []
        in_flight = 0
        for n in nrs:
            cost = n if 0 < n <= proto.MAX_NR_REQ else 0
            if cost and self.charge + in_flight + cost > limit and (self.kept or batch):
                results += self._setup_all(batch)
                batch, in_flight = [], 0
                self.release()
            batch.append(n)
            in_flight += cost
        results += self._setup_all(batch)
        for i, result in enumerate(results):
            if result.errno == _errno.EAGAIN and self.kept:
                # our own contexts may be what fills fs.aio-max-nr: free them, ask again
                self.release()
                results[i] = self._setup_all([result.nr_req])[0]
        if self.charge > limit:
            self.release()  # never leave the host with less than half its headroom
        return results

    def _setup_all(self, nrs: list[int]) -> list[RingProbe]:
        valid = [n for n in nrs if 0 <= n <= proto.MAX_NR_REQ]
        replies = iter(self._requests([proto.setup_request(n, keep=True) for n in valid]))
        results = []
        for n in nrs:
            if not 0 <= n <= proto.MAX_NR_REQ:
                results.append(RingProbe(nr_req=n, errno=_errno.EINVAL))
                continue
            result = proto.ring_from(next(replies), n)
            if result.ok:
                self.kept += 1
                self.charge += n
            results.append(result)
        return results

    def _limit(self) -> int:
        """What our probes may hold at once: half the headroom seen first (like live)."""
        if self._charge_limit is None:
            self._charge_limit = max(1, self.facts().aio_headroom // 2)
        return self._charge_limit

    def _start(self) -> subprocess.Popen[bytes]:
        if self._broken is not None:
            raise self._broken
        if self._proc is not None:
            return self._proc
        argv = self._argv or [find_agent()]
        # kept open for the agent's lifetime (closed in close()): its tail goes into errors
        self._stderr = tempfile.TemporaryFile(prefix="criu-aio-agent-")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            self._stderr.close()
            raise KernelError(
                f"cannot start the agent `{self._label}`: {err.strerror}", errno=err.errno
            ) from err
        self._proc = proc
        self._finalizer = weakref.finalize(self, _kill_group, proc)
        deadline = time.monotonic() + self._startup_timeout
        noise = 0
        while True:
            line = self._read_line(deadline, "its hello")
            try:
                hello = proto.find_hello(line)
            except KernelError as err:
                self._fail(err.message)
                self._broken = err
                raise
            if hello is not None:
                self.hello = hello
                return proc
            noise += len(line) + 1
            if noise > _MAX_NOISE:
                raise self._fail(f"no hello from the agent in {noise} bytes of output")

    def _request(self, line: str) -> proto.Reply:
        return self._requests([line])[0]

    def _requests(self, lines: list[str]) -> list[proto.Reply]:
        """Send *lines* at once, then read one reply per line (pipelined)."""
        if not lines:
            return []
        proc = self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise self._fail(f"cannot write to the agent: {err}") from err
        replies = []
        for line in lines:
            deadline = time.monotonic() + self._reply_timeout
            while True:
                reply = self._read_line(deadline, f"its reply to {line!r}").strip()
                if reply:  # a tty may add empty lines; replies are never empty
                    replies.append(proto.parse_reply(reply))
                    break
        return replies

    def _read_line(self, deadline: float, waiting_for: str) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if len(self._buffer) > _MAX_LINE:
                    # boot chatter without newlines is dropped; replies are short
                    self._buffer = self._buffer[-_MAX_LINE:]
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise self._fail(f"timed out waiting for {waiting_for}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise self._fail(f"the agent closed its output before {waiting_for}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        return raw.decode("ascii", errors="replace").rstrip("\r")

    def _fail(self, message: str) -> KernelError:
        """Mark the agent unusable, stop it, and build the error to raise."""
        proc = self._proc
        detail = ""
        if proc is not None:
            if self._finalizer is not None:
                self._finalizer()
            status = proc.returncode
            if status is not None:
                detail += (
                    f"; exit status {status}" if status >= 0 else f"; killed by signal {-status}"
                )
            detail += self._stderr_tail()
        error = KernelError(
            f"agent `{self._label}`: {message}{detail}",
            errno=_errno.EPROTO,
            hint="run the command by hand and type `facts` to see what it answers",
        )
        self._broken = error
        return error

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 400))
        tail = self._stderr.read().decode(errors="replace").strip()
        return f"; its stderr ends: {tail}" if tail else ""
