"""Test bed: real processes holding real AIO rings, dumped and restored by the real CRIU.

- build_holder(): compiles criu_aio_plugin/demo/holder.c (gcc) into tests/.build/ when
  the source is newer.
- start_holder(): starts a detached holder tree; Holder.reports() asks every
  process for its report (SIGUSR1) or to exercise its rings (SIGUSR2).
- Criu: runs `criu dump` / `criu restore` with logs in the images folder;
  Holder.dump() also waits until the dumped pids are free again.
- Checkpoint / Restored: what the conftest fixtures hand to tests.
- verify_restored(): the assertions a restored tree must pass.
- PyCriu: Debian's pycriu run in its own environment (pycriu_tool.py), an
  image codec independent of criu-aio's.
- possible_cpus(), ring_pages_for(), criu_nr_req(), n_for_pages(): the test
  bed's own ring arithmetic (DESIGN.md section 1), independent of the package.
- subreaper(): adopt the orphans of a block (detached holders, restored roots)
  so that they are reaped at once and their pids are free for the next restore.
- Every pid a holder ever reported is remembered; kill_all() (atexit) and the
  holder fixture's teardown kill whatever is left, so no test leaves a process
  behind, failing or not.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTBED = Path(__file__).resolve().parent
# The holder's source ships in the package (the `criu-aio demo` builds it too).
SOURCE = TESTBED.parent.parent / "criu_aio_plugin" / "demo" / "holder.c"
BUILD_DIR = TESTBED.parent / ".build"
PATTERN_BYTES = 1 << 20
DATA_BYTES = PATTERN_BYTES
AIO_RING_MAGIC = 0xA10A10A1
RING_HEADER = 32
IO_EVENT = 32
PAGE = os.sysconf("SC_PAGE_SIZE")
CRIU_TIMEOUT = 120.0


class TestbedError(Exception):
    """The test bed itself failed (build, start, report timeout)."""


# --- build -------------------------------------------------------------------


def build_holder(static: bool = False) -> Path:
    """Path of the compiled holder, (re)built with gcc when holder.c is newer."""
    out = BUILD_DIR / ("holder-static" if static else "holder")
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(tmp), str(SOURCE)]
    if static:
        cmd.insert(1, "-static")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise TestbedError("gcc not found: run scripts/setup.sh (installs gcc)") from err
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise TestbedError(f"building {out.name} failed:\n{proc.stderr}")
    os.replace(tmp, out)
    return out


# --- reports -----------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """What SIGUSR2 did on one ring: reap the pending events, then a write + read-back."""

    reaped: int
    reap_errno: int
    events_ok: bool
    data_ok: bool
    write_ok: bool
    read_ok: bool
    roundtrip_ok: bool
    submit_errno: int
    head_after: int
    tail_after: int


@dataclass(frozen=True)
class RingReport:
    """One ring as its process sees it (header fields are None when it has no mapping)."""

    index: int
    address: int
    requested: int
    pending: int
    ring_len: int
    getevents_ok: bool
    getevents_errno: int
    id: int | None = None
    nr: int | None = None
    head: int | None = None
    tail: int | None = None
    magic: int | None = None
    header_length: int | None = None
    incompat_features: int | None = None
    exercise: Exercise | None = None

    @property
    def slots(self) -> int:
        """Event slots in the ring: (ring_len - 32) / 32."""
        return (self.ring_len - RING_HEADER) // IO_EVENT

    @property
    def unreaped(self) -> int:
        if self.nr is None or self.head is None or self.tail is None or self.nr == 0:
            return 0
        return (self.tail - self.head) % self.nr


@dataclass(frozen=True)
class ProcessReport:
    name: str
    pid: int
    ppid: int
    sid: int
    event: str
    seq: int
    rings: tuple[RingReport, ...]


def _parse_report(raw: Mapping[str, Any]) -> ProcessReport:
    rings = []
    for r in raw["rings"]:
        r = dict(r)
        ex = r.pop("exercise", None)
        rings.append(RingReport(**r, exercise=Exercise(**ex) if ex is not None else None))
    return ProcessReport(
        name=raw["name"],
        pid=raw["pid"],
        ppid=raw["ppid"],
        sid=raw["sid"],
        event=raw["event"],
        seq=raw["seq"],
        rings=tuple(rings),
    )


def read_reports(report_dir: Path) -> dict[str, ProcessReport]:
    out = {}
    for path in sorted(report_dir.glob("*.json")):
        rep = _parse_report(json.loads(path.read_text()))
        out[rep.name] = rep
    return out


# --- processes ---------------------------------------------------------------

_KNOWN_PIDS: dict[int, str] = {}  # pid -> holder binary it ran when we saw it


def _exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _state(pid: int) -> str | None:
    """The /proc state letter of *pid*, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """True when *pid* exists and is not a zombie."""
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def is_holder(pid: int, binary: str | None = None) -> bool:
    exe = _exe_of(pid)
    if exe is None:
        return False
    exe = exe.removesuffix(" (deleted)")
    if binary is not None:
        return exe == binary
    return Path(exe).parent == BUILD_DIR and Path(exe).name.startswith("holder")


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of *pids* exists, zombies included; return those left at the timeout.

    A killed holder is reparented to init, which reaps it a little later; until
    then its pid is taken and `criu restore` fails with "Can't fork for PID:
    File exists". So "gone" means no /proc entry at all.
    """
    left = [p for p in pids if _state(p) is not None]
    deadline = time.monotonic() + timeout
    while left:
        _reap(left)
        left = [p for p in left if _state(p) is not None]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    return left


def _reap(pids: Iterable[int]) -> None:
    """waitpid those of *pids* that are our zombie children (see subreaper())."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _prctl() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def _set_subreaper(on: bool) -> None:
    if _prctl()(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "prctl(PR_SET_CHILD_SUBREAPER)")


def _is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    if _prctl()(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "prctl(PR_GET_CHILD_SUBREAPER)")
    return flag.value != 0


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Within the block, processes orphaned below us are reparented to us, not init.

    Holders detach (double fork), `criu restore -d` leaves the restored root
    without a parent, and a failed restore leaves its killed tasks to whoever
    reaps orphans. Init reaps here seconds later, and until then the pids stay
    taken: the next restore of the same checkpoint fails with "Can't fork for
    PID: File exists". Adopted, they are reaped at once by wait_gone() (by pid,
    never waitpid(-1), which would steal other subprocesses' statuses).

    Only for the block: a permanent subreaper would also adopt the orphans of
    every other test in this pytest process.
    """
    was = _is_subreaper()
    if not was:
        _set_subreaper(True)
    try:
        yield
    finally:
        if not was:
            _set_subreaper(False)


def kill_pids(pids: Iterable[int], binary: str | None = None) -> list[int]:
    """SIGKILL those of *pids* that are still holders; return any not gone after it."""
    targets = [p for p in pids if alive(p) and is_holder(p, binary)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [p for p in wait_gone(targets) if alive(p)]


def kill_all() -> list[int]:
    """Kill every holder this process ever started or restored; return survivors.

    Only pids this process saw: other test runs on the same machine may have
    holders of their own running.
    """
    left = []
    for binary in set(_KNOWN_PIDS.values()):
        left += kill_pids(sorted(p for p, b in _KNOWN_PIDS.items() if b == binary), binary)
    for pid in list(_KNOWN_PIDS):
        if not alive(pid):
            del _KNOWN_PIDS[pid]
    return left


atexit.register(kill_all)


@dataclass(frozen=True)
class RingSpec:
    """A ring to hold: io_setup(n), then `pending` reads left completed and unreaped."""

    n: int
    pending: int = 0

    def arg(self) -> str:
        return f"{self.n}:{self.pending}"


def ring_specs(rings: Sequence[int | RingSpec]) -> list[RingSpec]:
    return [r if isinstance(r, RingSpec) else RingSpec(r) for r in rings]


@dataclass
class Holder:
    """A running (or dumped, or restored) holder tree."""

    workdir: Path
    binary: Path
    rings: tuple[RingSpec, ...]
    children: int
    grandchildren: int
    initial: dict[str, ProcessReport] = field(default_factory=dict)

    @property
    def report_dir(self) -> Path:
        return self.workdir / "reports"

    @property
    def data_file(self) -> Path:
        return self.workdir / "data.bin"

    @property
    def names(self) -> list[str]:
        return sorted(self.initial)

    @property
    def pid(self) -> int:
        """Pid of the tree's root (what `criu dump -t` takes)."""
        return self.initial["root"].pid

    @property
    def pids(self) -> dict[str, int]:
        return {name: rep.pid for name, rep in self.initial.items()}

    def alive(self) -> dict[str, bool]:
        return {name: alive(pid) for name, pid in self.pids.items()}

    def reports(self, exercise: bool = False, timeout: float = 10.0) -> dict[str, ProcessReport]:
        """Fresh report of every process (SIGUSR2 with exercise=True: reap, submit, read)."""
        sig = signal.SIGUSR2 if exercise else signal.SIGUSR1
        for name, pid in self.pids.items():
            (self.report_dir / f"{name}.json").unlink(missing_ok=True)
            if not alive(pid):
                raise TestbedError(f"holder {name} (pid {pid}) is not running")
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while True:
            reports = read_reports(self.report_dir)
            if set(reports) >= set(self.pids):
                return reports
            if time.monotonic() > deadline:
                missing = sorted(set(self.pids) - set(reports))
                raise TestbedError(f"no report from {missing} within {timeout} s")
            time.sleep(0.005)

    def dump(self, criu: Criu, images_dir: Path, *extra: str) -> CriuRun:
        """`criu dump` the tree; on success wait until its pids are free again."""
        run = criu.dump(self.pid, images_dir, *extra)
        if run.ok and "--leave-running" not in extra:
            left = wait_gone(self.pids.values())
            if left:
                raise TestbedError(f"dumped holder processes {left} still exist")
        return run

    def kill(self) -> None:
        left = kill_pids(self.pids.values(), str(self.binary))
        if left:
            raise TestbedError(f"holder processes {left} survived SIGKILL")


def _write_data_file(path: Path) -> None:
    path.write_bytes(bytes(i % 251 for i in range(DATA_BYTES)))


def start_holder(
    workdir: Path,
    rings: Sequence[int | RingSpec],
    *,
    children: int = 0,
    grandchildren: int = 0,
    static: bool = False,
) -> Holder:
    """Start a detached holder tree in *workdir*; returns once every process reported."""
    binary = build_holder(static)
    specs = tuple(ring_specs(rings))
    workdir.mkdir(parents=True, exist_ok=True)
    holder = Holder(workdir, binary, specs, children, grandchildren)
    holder.report_dir.mkdir(exist_ok=True)
    _write_data_file(holder.data_file)
    argv = [str(binary), str(holder.report_dir), str(holder.data_file)]
    for spec in specs:
        argv += ["-r", spec.arg()]
    argv += ["-c", str(children), "-g", str(grandchildren)]
    with subreaper():  # the detached tree becomes our child: killed, it is reaped at once
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    reports = read_reports(holder.report_dir)
    for rep in reports.values():
        _KNOWN_PIDS[rep.pid] = str(binary)
    if proc.returncode != 0:
        kill_pids([r.pid for r in reports.values()], str(binary))
        raise TestbedError(f"holder failed to start ({proc.returncode}): {proc.stderr.strip()}")
    expected = 1 + children + children * grandchildren
    if len(reports) != expected:
        kill_pids([r.pid for r in reports.values()], str(binary))
        raise TestbedError(f"holder tree has {len(reports)} processes, expected {expected}")
    holder.initial = reports
    return holder


# --- CRIU --------------------------------------------------------------------


@dataclass(frozen=True)
class CriuRun:
    argv: tuple[str, ...]
    returncode: int
    log: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        return f"`{' '.join(self.argv)}` exited {self.returncode}; last lines of {self.log}:\n" + (
            self.tail()
        )


@dataclass(frozen=True)
class Criu:
    """The real CRIU binary (a path from find_criu / the criu_bin fixture)."""

    path: str

    def _run(self, args: Sequence[str], log: Path) -> CriuRun:
        argv = (self.path, *args)
        start = time.monotonic()
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CRIU_TIMEOUT,
            check=False,
        )
        return CriuRun(argv, proc.returncode, log, time.monotonic() - start)

    def dump(self, pid: int, images_dir: Path, *extra: str) -> CriuRun:
        images_dir.mkdir(parents=True, exist_ok=True)
        return self._run(
            ["dump", "-t", str(pid), "-D", str(images_dir), "-o", "dump.log", "-v4", *extra],
            images_dir / "dump.log",
        )

    def restore(self, images_dir: Path, pidfile: Path, *extra: str) -> CriuRun:
        """`criu restore -d`: returns once the tree runs detached (or the restore failed)."""
        pidfile.unlink(missing_ok=True)
        with subreaper():  # the restored root, or a failed restore's tasks, become ours
            run = self._run(
                [
                    "restore",
                    "-D",
                    str(images_dir),
                    "-d",
                    "--pidfile",
                    str(pidfile),
                    "-o",
                    "restore.log",
                    "-v4",
                    *extra,
                ],
                images_dir / "restore.log",
            )
        # A failed restore's tasks carry dumped (so known) pids: reap those now.
        _reap(p for p in list(_KNOWN_PIDS) if _state(p) == "Z")
        return run


def ring_lens_of(pid: int) -> dict[int, int]:
    """address -> length of every `/[aio]` mapping of *pid* (empty when it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/maps", encoding="ascii", errors="replace") as f:
            for line in f:
                if "/[aio]" in line:
                    start, end = (int(x, 16) for x in line.split()[0].split("-"))
                    out[start] = end - start
    except OSError:
        return {}
    return out


def processes_with_rings(addresses: Iterable[int]) -> dict[int, list[int]]:
    """pid -> those of *addresses* at which a live process maps an AIO ring."""
    wanted = set(addresses)
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not alive(int(entry)):
            continue
        hits = sorted(wanted & set(ring_lens_of(int(entry))))
        if hits:
            found[int(entry)] = hits
    return found


# --- verification -------------------------------------------------------------


def verify_restored(
    before: Mapping[str, ProcessReport],
    after: Mapping[str, ProcessReport],
    exercised: Mapping[str, ProcessReport],
) -> None:
    """Assert that a restored tree holds the same rings in the same state, and they work.

    *before*: reports taken just before the dump; *after*: SIGUSR1 reports of the
    restored tree; *exercised*: its SIGUSR2 reports (pending events reaped, a
    write and a read-back submitted on every ring).
    """
    assert set(after) == set(before), f"restored processes {sorted(after)} != {sorted(before)}"
    for name, old in before.items():
        new = after[name]
        assert new.pid == old.pid, f"{name}: pid {new.pid} != dumped {old.pid}"
        assert len(new.rings) == len(old.rings), f"{name}: ring count changed"
        for o, n in zip(old.rings, new.rings, strict=True):
            where = f"{name} (pid {old.pid}) ring {o.index} at {o.address:#x}"
            assert n.address == o.address, f"{where}: address became {n.address:#x}"
            assert n.ring_len == o.ring_len, f"{where}: ring_len {n.ring_len} != {o.ring_len}"
            assert n.magic == AIO_RING_MAGIC, f"{where}: magic {n.magic!r}"
            assert n.nr == o.nr, f"{where}: nr {n.nr} != dumped {o.nr}"
            assert (n.head, n.tail) == (o.head, o.tail), (
                f"{where}: head/tail {n.head}/{n.tail} != dumped {o.head}/{o.tail}"
            )
            assert n.getevents_ok, f"{where}: io_getevents rejects it (errno {n.getevents_errno})"
        for o, x in zip(old.rings, exercised[name].rings, strict=True):
            where = f"{name} (pid {old.pid}) ring {o.index} at {o.address:#x}"
            ex = x.exercise
            assert ex is not None, f"{where}: no exercise report"
            assert ex.reaped == o.pending, (
                f"{where}: reaped {ex.reaped} of {o.pending} pending events (errno {ex.reap_errno})"
            )
            assert ex.events_ok, f"{where}: pending events came back wrong"
            assert ex.data_ok, f"{where}: data read by pending events is wrong"
            assert ex.write_ok, f"{where}: io_submit/io_getevents write failed ({ex.submit_errno})"
            assert ex.read_ok, f"{where}: io_submit/io_getevents read failed ({ex.submit_errno})"
            assert ex.roundtrip_ok, f"{where}: read-back differs from what was written"


def check_fresh(reports: Mapping[str, ProcessReport], specs: Sequence[RingSpec]) -> None:
    """Assert a holder's own view of its rings right after start (sanity of the bed)."""
    for name, rep in reports.items():
        assert len(rep.rings) == len(specs), f"{name}: {len(rep.rings)} rings"
        for r, spec in zip(rep.rings, specs, strict=True):
            where = f"{name} ring {r.index}"
            assert r.requested == spec.n
            assert r.magic == AIO_RING_MAGIC, f"{where}: magic {r.magic!r}"
            assert r.ring_len > 0 and r.ring_len % PAGE == 0, f"{where}: ring_len {r.ring_len}"
            assert r.nr == r.slots, f"{where}: nr {r.nr} != slots {r.slots}"
            assert r.unreaped == spec.pending, f"{where}: {r.unreaped} unreaped"
            assert r.getevents_ok, f"{where}: io_getevents errno {r.getevents_errno}"


# --- checkpoints --------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A holder tree dumped by the real CRIU: the images and what the tree said before."""

    images_dir: Path
    holder: Holder
    before: dict[str, ProcessReport]
    dump: CriuRun

    @property
    def addresses(self) -> list[int]:
        return [r.address for rep in self.before.values() for r in rep.rings]

    def mm_image(self, name: str = "root") -> Path:
        """The mm-<pid>.img of the process called *name* (root, c0, c0g0, ...)."""
        return self.images_dir / f"mm-{self.before[name].pid}.img"


@dataclass(frozen=True)
class Restored:
    run: CriuRun
    after: dict[str, ProcessReport]
    exercised: dict[str, ProcessReport]


# --- ring arithmetic (the test bed's own, independent of criu_aio_plugin) ------


def possible_cpus() -> int:
    """Number of possible CPUs, from /sys/devices/system/cpu/possible ("0-1,4-7")."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def ring_pages_for(n: int, cpus: int | None = None) -> int:
    """Pages of the ring a modern kernel makes for io_setup(n) (fs/aio.c ioctx_alloc)."""
    cpus = possible_cpus() if cpus is None else cpus
    slots = 2 * max(n, 4 * cpus) + 2
    return -(-(RING_HEADER + IO_EVENT * slots) // PAGE)


def criu_nr_req(ring_len: int) -> int:
    """The nr_req CRIU 4.x writes at dump: (k - 2) / 2 with k = (ring_len - 32) / 32."""
    return ((ring_len - RING_HEADER) // IO_EVENT - 2) // 2


def n_for_pages(pages: int) -> int:
    """An io_setup n that gives a *pages*-page ring on hosts whose smallest ring is smaller."""
    return criu_nr_req(pages * PAGE)


def other_build_nr_req(ring_len: int) -> int:
    """nr_req as another CRIU build writes it: k - 2 (CRIU 4.x writes (k - 2) / 2)."""
    return (ring_len - RING_HEADER) // IO_EVENT - 2


# --- pycriu (Debian's, in its own environment) ----------------------------------

PYCRIU_PATH_FILE = Path("/opt/criu-aio/pycriu-path")
PYCRIU_TOOL = TESTBED / "pycriu_tool.py"


@dataclass(frozen=True)
class PyCriu:
    """Debian's pycriu, run as `python3 -S` with only its own folder on PYTHONPATH.

    pycriu needs a protobuf runtime older than 7 (see scripts/provision-criu.sh);
    criu-aio's environment has 7.x, so pycriu never runs in-process.
    """

    path: Path
    python: str = "python3"

    @classmethod
    def locate(cls) -> PyCriu | None:
        env = os.environ.get("CRIU_AIO_PYCRIU")
        folder = Path(env) if env else None
        if folder is None and PYCRIU_PATH_FILE.is_file():
            folder = Path(PYCRIU_PATH_FILE.read_text().strip())
        if folder is None or not (folder / "pycriu" / "images").is_dir():
            return None
        return cls(folder, shutil.which("python3") or "/usr/bin/python3")

    def run(self, *args: str) -> str:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.path),
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        }
        proc = subprocess.run(
            [self.python, "-S", str(PYCRIU_TOOL), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise TestbedError(f"pycriu_tool {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def aios(self, mm_image: Path) -> list[dict[str, int]]:
        """The mm image's aio_ring_entry list, decoded by pycriu."""
        rings: list[dict[str, int]] = json.loads(self.run("aios", str(mm_image)))
        return rings

    def set_nr_req(self, mm_image: Path, changes: Mapping[int, int]) -> None:
        """Rewrite nr_req of the rings with these ids (addresses) through pycriu's codec."""
        self.run("set-nr-req", str(mm_image), *(f"{k:#x}={v}" for k, v in changes.items()))

    def forge(self, mm_image: Path) -> dict[int, int]:
        """Give every ring of *mm_image* the nr_req another CRIU build writes; return them."""
        forged = {a["id"]: other_build_nr_req(a["ring_len"]) for a in self.aios(mm_image)}
        self.set_nr_req(mm_image, forged)
        return forged
