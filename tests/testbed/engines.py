"""Real container engines for the engine tests (tests/e2e/engines/): what they share.

What scripts/provision-engines.sh provides (docs/engines-here.md): podman 4.3.1
with a private configuration (wrapper ENGINES/bin/podman) running Debian 13's
crun 1.21 (+CRIU) or Debian 12's runc 1.1.5, and containerd 1.6 + ctr, whose
daemon a test session starts privately. The engines themselves are in
testbed/podman.py and testbed/containerd.py, behind the same small surface:
start a holder container, checkpoint it with the real CRIU into a forged
checkpoint, restore that under a new name, say what is left of a container.

- CriuSlot: a folder first on the engine's PATH whose `criu` is either the real
  CRIU (a symlink) or criu-aio's launcher carrying its own config file: how a
  user installs criu-aio as `criu`, configured by the file alone.
- Shared: the folder bind-mounted at /work in every test container: the
  static holder, its data file and its reports.
- Forged / forge_tar: a checkpoint whose nr_req were set as another CRIU build
  writes them (Debian's pycriu, PyCriu.forge), and the bytes of its images.
- Restore / pointed_log: what a restore showed the user and the CRIU log file
  the runtime's message names.

Orphans: PID 1 on these machines does not reap. conmon and containerd's shims
double-fork, so they and what they leave become zombies of PID 1 unless a
subreaper adopts them: the tests run under harness.subreaper() and reap what
they adopted (reap_adopted) by pid.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.harness import (
    DATA_BYTES,
    ProcessReport,
    PyCriu,
    RingSpec,
    TestbedError,
    build_holder,
    read_reports,
)

PREFIX = Path("/opt/criu-aio")
ENGINES = PREFIX / "engines"
PODMAN = ENGINES / "bin" / "podman"
CRUN = PREFIX / "crun" / "bin" / "crun"
IMAGE = "localhost/criu-aio/busybox:latest"
OCI_ARCHIVE = ENGINES / "busybox.oci.tar"
# The PATH an engine gets, after the slot: no real CRIU anywhere on it.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENGINE_TIMEOUT = 120.0
ENABLE = "bash scripts/provision-engines.sh (as root; scripts/setup.sh runs it)"


def engine_problem(engine: str) -> str | None:
    """Why *engine* (podman-crun, podman-runc, containerd) cannot run here, or None."""
    if shutil.which("busybox") is None:
        return "no busybox (busybox-static)"
    if engine.startswith("podman") and not PODMAN.is_file():
        return f"no {PODMAN}"
    if engine == "podman-crun":
        if not CRUN.is_file():
            return f"no private crun at {CRUN}"
        held = _v2_held_controllers()
        if held:
            return f"cgroup v2 holds {held} in hybrid mode, which crun refuses"
    elif shutil.which("runc") is None:
        return "no runc on PATH"
    if engine == "containerd":
        if not (shutil.which("containerd") and shutil.which("ctr")):
            return "no containerd or ctr on PATH"
        if not OCI_ARCHIVE.is_file():
            return f"no image archive {OCI_ARCHIVE}"
    return None


def _v2_held_controllers() -> str:
    unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    try:
        return unified.read_text().strip()
    except OSError:
        return ""


# --- processes ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One engine command and what it printed (stdout and stderr as one text)."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return f"`{' '.join(self.argv)}` exited {self.returncode}:\n{self.output}"


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float = ENGINE_TIMEOUT) -> Run:
    proc = subprocess.run(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(tuple(argv), proc.returncode, proc.stdout)


def engine_env(path: str) -> dict[str, str]:
    """The caller's environment without any CRIU_AIO_* (criu-aio must not need them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIU_AIO_")}
    env["PATH"] = path
    return env


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    comm: str


def processes() -> Iterator[Proc]:
    """Every process in /proc now (those that vanish while we look are left out)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 :].rsplit(")", 1)
        state, ppid = rest.split()[:2]
        yield Proc(int(entry), int(ppid), state, comm)


def reap_adopted(keep: Iterable[int] = ()) -> None:
    """waitpid our zombie children except *keep* (orphans we adopted as subreaper).

    Only zombies: a live child may be a subprocess another call still waits for.
    """
    skip = set(keep)
    for p in processes():
        if p.state == "Z" and p.ppid == os.getpid() and p.pid not in skip:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def live_processes() -> list[Proc]:
    return [p for p in processes() if p.state not in ("Z", "X")]


def processes_in_cgroup(component: str) -> dict[int, str]:
    """pid -> comm of every live process with *component* in one of its cgroup paths."""
    out = {}
    for p in live_processes():
        try:
            cgroups = Path(f"/proc/{p.pid}/cgroup").read_text()
        except OSError:
            continue
        if any(component in line.split(":", 2)[-1].split("/") for line in cgroups.splitlines()):
            out[p.pid] = p.comm
    return out


def descendants(root: int) -> dict[int, str]:
    """pid -> comm of every live descendant of *root*."""
    live = {p.pid: p for p in live_processes()}
    out = {}
    for p in live.values():
        up = p.ppid
        while up > 1 and up != root and up in live:
            up = live[up].ppid
        if up == root:
            out[p.pid] = p.comm
    return out


def children_named(parent: int, comm: str) -> list[int]:
    return sorted(p.pid for p in live_processes() if p.ppid == parent and p.comm == comm)


def remove_cgroups(name: str) -> None:
    """rmdir every cgroup folder called *name* (all hierarchies), children first.

    crun leaves a failed restore's cgroup (with a `.proxy-crun` child) behind,
    and `podman rm` does not remove it (measured with crun 1.21, podman 4.3.1).
    """
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for parent, dirs, _ in os.walk(hierarchy):
            found += [Path(parent) / d for d in dirs if d == name]
    for folder in found:
        inner = [p for p in folder.rglob("*") if p.is_dir()]
        for sub in [*sorted(inner, key=lambda p: len(p.parts), reverse=True), folder]:
            with contextlib.suppress(OSError):
                sub.rmdir()


# --- the criu slot -----------------------------------------------------------


class CriuSlot:
    """A folder first on an engine's PATH holding its `criu`.

    plain(): `criu` is the real CRIU. criu_aio(...): `criu` is criu-aio's
    launcher (install-shim) with a config file recorded in it, naming the real
    CRIU, the log file and any other setting: no environment variable needed.
    """

    def __init__(self, folder: Path, real_criu: str) -> None:
        self.folder = folder
        self.real_criu = real_criu
        self.config = folder / "config.toml"
        self.log = folder / "criu-aio.log"
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def criu(self) -> Path:
        return self.folder / "criu"

    @property
    def path_env(self) -> str:
        return f"{self.folder}:{SYSTEM_PATH}"

    def plain(self) -> None:
        tmp = self.folder / ".criu.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.real_criu)
        os.replace(tmp, self.criu)

    def criu_aio(self, **settings: str) -> None:
        from criu_aio_plugin.cli.install_shim import install

        values = {"criu": self.real_criu, "log": str(self.log), "log_level": "info", **settings}
        self.config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        self.criu.unlink(missing_ok=True)
        install(str(self.folder), "criu", settings={"config": str(self.config)})

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


# --- the shared folder -------------------------------------------------------


class Shared:
    """The host folder every test container sees at /work."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.reports_dir = folder / "reports"
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(build_holder(static=True), folder / "holder")
        (folder / "data.bin").write_bytes(bytes(i % 251 for i in range(DATA_BYTES)))

    @staticmethod
    def command(rings: Sequence[RingSpec]) -> list[str]:
        """The container's process: the holder's tree, then `sleep` as the idle init."""
        ring_args = " ".join(f"-r {r.arg()}" for r in rings)
        return [
            "sh",
            "-c",
            "exec </dev/null >/dev/null 2>&1; "
            f"/work/holder /work/reports /work/data.bin {ring_args} && exec sleep 1000000",
        ]

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.reports_dir / "root.json").exists():
            if time.monotonic() > deadline:
                raise TestbedError("the holder did not start in the container")
            time.sleep(0.01)

    def reports(self, pids: Sequence[int], exercise: bool = False) -> dict[str, ProcessReport]:
        """Ask the holder processes (host pids) for their reports (SIGUSR2: exercise)."""
        if not pids:
            raise TestbedError("no holder runs in the container")
        for old in self.reports_dir.glob("*.json"):
            old.unlink()
        for pid in pids:
            os.kill(pid, signal.SIGUSR2 if exercise else signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while True:
            reports = read_reports(self.reports_dir)
            if len(reports) == len(pids):
                return reports
            if time.monotonic() > deadline:
                raise TestbedError(f"{len(reports)} of {len(pids)} holder reports came")
            time.sleep(0.01)


# --- forged checkpoints ------------------------------------------------------


@dataclass
class Forged:
    """A checkpoint with forged nr_req: where it is and the bytes of its CRIU images."""

    ref: str  # the export archive (podman) or the image reference (containerd)
    images: dict[str, bytes] = field(default_factory=dict)  # image file -> bytes
    forged: dict[str, dict[int, int]] = field(default_factory=dict)  # mm file -> {ring: nr_req}

    def differences(self, images_dir: Path) -> list[str]:
        """Images in *images_dir* that differ from the forged ones (logs aside)."""
        diffs = []
        for name, data in sorted(self.images.items()):
            path = images_dir / name
            if not path.is_file():
                diffs.append(f"{name}: missing")
            elif path.read_bytes() != data:
                diffs.append(f"{name}: changed")
        return diffs


def forge_tar(data: bytes, prefix: str, pycriu: PyCriu, forged: Forged) -> bytes:
    """The tar *data* with every mm image under *prefix* forged (member order kept)."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(data)) as src:
        members = src.getmembers()
        replaced: dict[str, bytes] = {}
        for m in members:
            name = m.name.removeprefix("./")
            if not (m.isfile() and name.startswith(prefix)):
                continue
            content = src.extractfile(m)
            assert content is not None
            raw = content.read()
            base = name.removeprefix(prefix)
            if "/" not in base and not base.endswith(".log"):
                forged.images[base] = raw
            if re.fullmatch(r"mm-\d+\.img", base):
                path = Path(tmp) / base
                path.write_bytes(raw)
                if pycriu.aios(path):
                    forged.forged[base] = pycriu.forge(path)
                    replaced[m.name] = forged.images[base] = path.read_bytes()
        if not forged.forged:
            raise TestbedError("no mm image with AIO rings in the checkpoint")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=src.format) as dst:
            for m in members:
                if m.name in replaced:
                    m.size = len(replaced[m.name])
                    dst.addfile(m, io.BytesIO(replaced[m.name]))
                else:
                    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        return out.getvalue()


@dataclass(frozen=True)
class Restore:
    """What a restore showed the user: the command's output and the log it points to."""

    run: Run
    log: Path | None  # the CRIU log file the runtime names (None if it names none)
    images_dir: Path | None  # where the runtime put the images CRIU was given, if kept

    def log_text(self) -> str:
        if self.log is None:
            return ""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


# The file a runtime names when a restore fails:
#   crun:  "CRIU restoring failed -52.  Please check CRIU logfile `PATH`"
#   runc:  "criu failed: type RESTORE errno 34\nlog file: PATH"
_LOG_POINTER = re.compile(r"CRIU logfile `(?P<crun>[^`]+)`|log file: (?P<runc>\S+?)(?::|\s|$)")


def pointed_log(output: str) -> Path | None:
    m = _LOG_POINTER.search(output)
    if m is None:
        return None
    return Path(m["crun"] or m["runc"])
