"""runc (Debian 12's 1.1.5) checkpointing and restoring a container through criu-aio.

The container: a busybox-static rootfs, the static holder holding AIO rings
(one with a pending event), no network namespace of its own (CRIU would need
iptables-restore to lock it otherwise), stdio on the container's /dev/null.
It is checkpointed with the real CRIU, its nr_req forged as another CRIU build
writes it (Debian's pycriu), then restored:
- with `runc --criu <real criu>`: CRIU fails with `wrong aio`;
- with `runc --criu <criu-aio launcher>`: runc's VERSION swrk passes through,
  its RESTORE swrk gets the rings fixed, the container runs, and every ring
  still holds its events and takes new I/O.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rpc_helpers import fds_of, forge_image, install_launcher
from testbed.harness import (
    PyCriu,
    build_holder,
    n_for_pages,
    read_reports,
    verify_restored,
)

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

RINGS = [(n_for_pages(3), 1), (n_for_pages(2), 0)]


def _runc() -> str:
    found = shutil.which("runc")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("runc is not installed: apt-get install runc")
        pytest.skip("runc is not installed (apt-get install runc) ")
    return found


class Container:
    def __init__(self, runc: str, root: Path, name: str) -> None:
        self.runc, self.root, self.name = runc, root, name
        self.bundle = root / "bundle"
        self.shared = root / "shared"  # bind-mounted at /work: reports and data

    def cmd(self, *args: str, criu: str | None = None, env: dict[str, str] | None = None):
        argv = [self.runc, *(["--criu", criu] if criu else []), *args]
        return subprocess.run(
            argv,
            cwd=self.bundle,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        """`runc run -d`, then wait for the holder's first report."""
        run = self.cmd("run", "-d", self.name)
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 20
        while not (self.shared / "reports" / "root.json").exists():
            assert time.monotonic() < deadline, "holder did not start in the container"
            time.sleep(0.01)

    def checkpoint(self, images: Path, work: Path, criu: str) -> None:
        """`runc checkpoint` with the real CRIU into *images*."""
        ckpt = self.cmd(
            "checkpoint", "--image-path", str(images), "--work-path", str(work), self.name,
            criu=criu,
        )  # fmt: skip
        assert ckpt.returncode == 0, ckpt.stderr

    def holder_pids(self) -> list[int]:
        """Host pids of the holder processes (runc ps), init (busybox sleep) excluded."""
        out = self.cmd("ps", "--format", "json", self.name)
        assert out.returncode == 0, out.stderr
        pids = json.loads(out.stdout)
        return [p for p in pids if Path(f"/proc/{p}/comm").read_text().strip() == "holder"]

    def reports(self, sig: int) -> dict:
        for old in (self.shared / "reports").glob("*.json"):
            old.unlink()
        pids = self.holder_pids()
        assert pids, "no holder runs in the container"
        for pid in pids:
            os.kill(pid, sig)
        deadline = time.monotonic() + 20
        while True:
            reports = read_reports(self.shared / "reports")
            if len(reports) == len(pids):
                return reports
            assert time.monotonic() < deadline, "no report from the container"
            time.sleep(0.01)

    def destroy(self) -> None:
        self.cmd("kill", self.name, "KILL")
        for _ in range(50):
            if self.cmd("delete", "-f", self.name).returncode == 0:
                break
            time.sleep(0.1)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    runc = _runc()
    root = tmp_path / "ctr"
    c = Container(runc, root, f"criu-aio-{os.getpid()}-{int(time.time() * 1000) % 100000}")
    rootfs = c.bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (c.shared / "reports").mkdir(parents=True)
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    shutil.copy(build_holder(static=True), rootfs / "holder")
    (c.shared / "data.bin").write_bytes(bytes(i % 251 for i in range(1 << 20)))
    assert c.cmd("spec").returncode == 0
    config = json.loads((c.bundle / "config.json").read_text())
    ring_args = " ".join(f"-r {n}:{p}" for n, p in RINGS)
    config["process"]["terminal"] = False
    config["process"]["args"] = [
        "/bin/sh",
        "-c",
        "exec </dev/null >/dev/null 2>&1; "
        f"/holder /work/reports /work/data.bin {ring_args} && exec sleep 1000000",
    ]
    config["root"]["readonly"] = False
    config["linux"]["namespaces"] = [
        ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"
    ]
    config["mounts"].append(
        {
            "destination": "/work",
            "type": "bind",
            "source": str(c.shared),
            "options": ["rbind", "rw"],
        }
    )
    (c.bundle / "config.json").write_text(json.dumps(config))
    yield c
    c.destroy()


def test_runc_restore_through_criu_aio(
    container: Container, criu_bin: str, pycriu: PyCriu, tmp_path: Path
) -> None:
    c = container
    c.start()
    before = c.reports(signal.SIGUSR1)
    fds_before = sorted(t for pid in c.holder_pids() for t in fds_of(pid).values())

    images = tmp_path / "checkpoint"
    c.checkpoint(images, tmp_path / "w0", criu_bin)
    forged = [m for m in images.glob("mm-*.img") if pycriu.aios(m)]
    assert forged, "no mm image with AIO rings in the checkpoint"
    for mm in forged:
        forge_image(pycriu, mm)

    alone = c.cmd(
        "restore",
        "-d",
        "--image-path",
        str(images),
        "--work-path",
        str(tmp_path / "w1"),
        c.name,
        criu=criu_bin,
    )
    assert alone.returncode != 0, "runc + CRIU alone restored the wrong-nr_req checkpoint"
    assert "wrong aio" in (tmp_path / "w1" / "restore.log").read_text()
    c.destroy()

    launcher = install_launcher(tmp_path / "shim")
    log = tmp_path / "criu-aio.log"
    restored = c.cmd(
        "restore",
        "-d",
        "--image-path",
        str(images),
        "--work-path",
        str(tmp_path / "w2"),
        c.name,
        criu=launcher,
        env={"CRIU_AIO_CRIU": criu_bin, "CRIU_AIO_LOG": str(log)},
    )
    assert restored.returncode == 0, (
        restored.stderr + (tmp_path / "w2" / "restore.log").read_text()[-2000:]
    )
    text = log.read_text()
    assert "VERSION: nothing for criu-aio to do" in text  # runc's version swrk passed through
    assert "rewrote mm-" in text

    after = c.reports(signal.SIGUSR1)
    exercised = c.reports(signal.SIGUSR2)
    verify_restored(before, after, exercised)
    # the restored holders hold what they held before: nothing of criu-aio's or runc's
    fds_after = sorted(t for pid in c.holder_pids() for t in fds_of(pid).values())
    assert fds_after == fds_before


def test_runc_refusal_shows_the_reason_where_runc_points(
    container: Container, criu_bin: str, tmp_path: Path
) -> None:
    """A ring impossible on this (simulated, 256-CPU) host: runc's restore fails, and the
    log runc points its user at holds criu-aio's reason. Configured only by a config
    file the launcher carries: no CRIU_AIO_* variable reaches it."""
    c = container
    c.start()
    images = tmp_path / "checkpoint"
    c.checkpoint(images, tmp_path / "w0", criu_bin)
    before = {p.name: p.read_bytes() for p in images.iterdir()}

    conf = tmp_path / "criu-aio.toml"
    log = tmp_path / "criu-aio.log"
    conf.write_text(f'criu = "{criu_bin}"\nkernel = "sim:cpus=256"\nlog = "{log}"\n')
    from criu_aio_plugin.cli.install_shim import install

    launcher = install(str(tmp_path / "shim"), settings={"config": str(conf)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIU_AIO_")}
    work = tmp_path / "w1"
    refused = subprocess.run(
        [c.runc, "--criu", launcher, "restore", "-d", "--image-path", str(images),
         "--work-path", str(work), c.name],
        cwd=c.bundle, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    print("runc stderr on refusal:", refused.stderr)
    assert refused.returncode != 0
    assert "criu failed: type RESTORE errno 34" in refused.stderr  # ERANGE
    pointed = work / "restore.log"
    assert f"log file: {pointed}" in refused.stderr  # runc's pointer ...
    reason = pointed.read_text()  # ... leads to the reason
    print("runc's restore.log:", reason)
    assert "cannot exist on this host" in reason and "256 possible CPUs" in reason
    assert "CRIU did not run" in reason
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before
    assert "VERSION: nothing for criu-aio to do" in log.read_text()
    state = c.cmd("state", c.name)
    assert state.returncode != 0 or '"running"' not in state.stdout
