"""podman for the archive tests: an isolated podman whose containers hold AIO rings.

(The engine tests' testbed/podman.py, on the engines branch, drives the podman
that scripts/provision-engines.sh installs; this one needs only Debian 12's
podman and runc and the provisioned CRIU, and exports with podman's defaults.)

Every call uses its own storage (``--root``/``--runroot`` under a test folder,
the vfs driver: nothing stays mounted), its own containers.conf
(``CONTAINERS_CONF``: cgroupfs, file events, runc, no network; DESIGN.md 3d)
and a bin folder holding ``criu`` (the provisioned CRIU): podman checks the
CRIU version through its own PATH, and conmon hands runc only the PATH of
``conmon_env_vars``. Nothing of the machine's podman state is used or changed.

The container runs the static holder (tests/testbed/holder.c) under a busybox
shell: the holder tree detaches and holds its rings, the shell then execs
``sleep`` as the container's PID 1. The host reads the tree's reports through
``/proc/<PID 1>/root/reports`` and signals its processes by their host pids.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.harness import (
    ProcessReport,
    RingSpec,
    TestbedError,
    _write_data_file,
    build_holder,
    read_reports,
)

BUSYBOX = Path("/bin/busybox")
IMAGE = "localhost/criu-aio-holder:1"
PROVISIONED = Path("/opt/criu-aio/criu-path")


class Podman:
    def __init__(self, work: Path, criu: str) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.bin = work / "bin"
        self.bin.mkdir(exist_ok=True)
        link = self.bin / "criu"
        if not link.exists():
            link.symlink_to(criu)
        path = f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.conf = work / "containers.conf"
        self.conf.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            'runtime = "runc"\n'
            f'conmon_env_vars = ["PATH={path}"]\n'
            "[containers]\n"
            'netns = "none"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf), "PATH": path}
        # podman refuses a runroot path longer than 50 characters.
        self.runroot = tempfile.mkdtemp(prefix="caio-pm-", dir="/tmp")
        self.base = [
            "podman",
            "--root",
            str(work / "storage"),
            "--runroot",
            self.runroot,
            "--storage-driver",
            "vfs",
        ]

    @staticmethod
    def missing() -> str | None:
        """Why podman cannot be used here, or None."""
        if shutil.which("podman") is None:
            return "podman is not installed"
        if not BUSYBOX.is_file():
            return "/bin/busybox is missing (busybox-static)"
        if not PROVISIONED.is_file():
            return "no provisioned CRIU (/opt/criu-aio/criu-path)"
        return None

    def run(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.base, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise TestbedError(f"podman {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def build_image(self) -> None:
        if self.run("image", "exists", IMAGE, check=False).returncode == 0:
            return
        rootfs = self.work / "rootfs"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        (rootfs / "reports").mkdir(exist_ok=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for tool in ("sh", "sleep"):
            (rootfs / "bin" / tool).unlink(missing_ok=True)
            (rootfs / "bin" / tool).symlink_to("busybox")
        shutil.copy2(build_holder(static=True), rootfs / "holder")
        _write_data_file(rootfs / "data.bin")
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True
        ).stdout
        done = subprocess.run(
            [*self.base, "import", "-", IMAGE], input=tar, env=self.env, capture_output=True
        )
        if done.returncode != 0:
            raise TestbedError(f"podman import failed: {done.stderr.decode().strip()}")

    def start(self, name: str, rings: Sequence[RingSpec]) -> Container:
        self.build_image()
        ring_args = " ".join(f"-r {r.arg()}" for r in rings)
        self.run(
            "run",
            "-d",
            "--name",
            name,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            IMAGE,
            "sh",
            "-c",
            f"/holder /reports /data.bin {ring_args} && exec sleep 1000000",
        )
        c = Container(self, name)
        c.wait_reports(["root"])
        return c

    def remove_all(self) -> None:
        self.run("rm", "--force", "--all", "--time", "0", check=False)

    def close(self) -> None:
        self.remove_all()
        shutil.rmtree(self.runroot, ignore_errors=True)


class Container:
    def __init__(self, podman: Podman, name: str) -> None:
        self.podman = podman
        self.name = name

    def init_pid(self) -> int:
        out = self.podman.run("inspect", "--format", "{{.State.Pid}}", self.name).stdout
        pid = int(out.strip() or 0)
        if pid <= 0:
            raise TestbedError(f"container {self.name} is not running")
        return pid

    @property
    def report_dir(self) -> Path:
        return Path(f"/proc/{self.init_pid()}/root/reports")

    def host_pids(self) -> dict[int, int]:
        """Container pid -> host pid of every process in the container's pid namespace."""
        init = self.init_pid()
        ns = os.readlink(f"/proc/{init}/ns/pid")
        out: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    out[int(line.split()[-1])] = int(entry)
        return out

    def wait_reports(self, names: Sequence[str], timeout: float = 30.0) -> dict[str, ProcessReport]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                reports = read_reports(self.report_dir)
            except (OSError, TestbedError, ValueError):
                reports = {}
            if set(reports) >= set(names):
                return reports
            if time.monotonic() > deadline:
                raise TestbedError(f"no reports from {self.name} within {timeout} s")
            time.sleep(0.02)

    def reports(self, names: Sequence[str], exercise: bool = False) -> dict[str, ProcessReport]:
        """Fresh reports (SIGUSR2 with exercise=True) of the named holder processes."""
        current = read_reports(self.report_dir)
        pids = self.host_pids()
        report_dir = self.report_dir
        for name in names:
            (report_dir / f"{name}.json").unlink(missing_ok=True)
            os.kill(pids[current[name].pid], signal.SIGUSR2 if exercise else signal.SIGUSR1)
        return self.wait_reports(names)
