"""criu-aio installed as `criu` (install-shim launcher first on PATH) and the restore wrap.

The launcher must find the real CRIU and never itself, pass every command it
does not handle straight to CRIU, and fix or refuse `criu restore` like the RPC
path does.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from rpc_helpers import forge, install_launcher, tree_digest
from testbed.harness import PyCriu, RingSpec, n_for_pages, wait_gone

from criu_aio_plugin.cli import exitcodes

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


@pytest.fixture
def shim_path(tmp_path: Path, criu_bin: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PATH with the launcher `criu` ahead of the real CRIU's folder."""
    install_launcher(tmp_path / "shim")
    monkeypatch.delenv("CRIU_AIO_CRIU", raising=False)
    monkeypatch.delenv("CRIU_AIO_KERNEL", raising=False)
    monkeypatch.setenv("CRIU_AIO_LOG", str(tmp_path / "criu-aio.log"))
    return f"{tmp_path / 'shim'}:{os.path.dirname(criu_bin)}:/usr/bin:/bin"


def _run(
    path: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PATH": path, **(env or {})}
    return subprocess.run(
        ["criu", *args], env=full, capture_output=True, text=True, timeout=120, check=False
    )


def test_version_passes_through_to_the_real_criu(shim_path: str, criu_bin: str) -> None:
    through = _run(shim_path, "--version")
    alone = subprocess.run([criu_bin, "--version"], capture_output=True, text=True, check=False)
    assert through.returncode == alone.returncode == 0
    assert through.stdout == alone.stdout and "Version: 4." in through.stdout


def test_launcher_alone_on_path_never_runs_itself(shim_path: str) -> None:
    only_shim = shim_path.split(":")[0] + ":/usr/bin:/bin"
    proc = _run(only_shim, "--version")
    assert proc.returncode == exitcodes.ERROR
    assert "no real CRIU found" in proc.stderr and "criu-aio itself" in proc.stderr


@pytest.mark.parametrize(
    "before",
    [
        (),
        # issue 12: options CRIU reads differently from how criu-aio used to guess
        ("--manage-cgroups", "--file-validation", "filesize", "-S", "--no-tcp-close"),
    ],
    ids=["plain", "leading-options"],
)
def test_criu_restore_fixes_the_wrong_nr_req_checkpoint(
    shim_path: str,
    checkpoint,
    restore_and_verify,
    pycriu: PyCriu,
    tmp_path: Path,
    before: tuple[str, ...],
) -> None:
    cp = checkpoint([RingSpec(n_for_pages(2), 1), RingSpec(n_for_pages(4))], children=1)
    forge(cp, pycriu, "root")
    forge(cp, pycriu, "c0")

    def criu_restore(cp, pidfile: Path):
        from testbed.harness import CriuRun

        args = (*before, "restore", "-D", str(cp.images_dir), "-d", "--pidfile", str(pidfile))
        proc = _run(shim_path, *args, "-o", "restore.log", "-v4")
        return CriuRun(("criu", *args), proc.returncode, cp.images_dir / "restore.log", 0.0)

    restore_and_verify(cp, criu_restore)
    assert "rewrote mm-" in (tmp_path / "criu-aio.log").read_text()


def test_criu_restore_refused_on_a_simulated_many_cpu_host(
    shim_path: str, checkpoint, tmp_path: Path
) -> None:
    cp = checkpoint([RingSpec(n_for_pages(1)), RingSpec(n_for_pages(2))])
    before = tree_digest(cp.images_dir)
    proc = _run(
        shim_path,
        "restore",
        "-D",
        str(cp.images_dir),
        "-d",
        "-o",
        "restore.log",
        env={"CRIU_AIO_KERNEL": "sim:cpus=64"},
    )
    assert proc.returncode == exitcodes.IMPOSSIBLE
    assert "cannot exist on this host" in proc.stderr and "5 pages" in proc.stderr
    # CRIU never ran: its -o log (relative to -D here) holds criu-aio's reason only
    lines = (cp.images_dir / "restore.log").read_text().splitlines()
    assert lines and all(") Error (criu-aio): " in line for line in lines)
    assert "cannot exist on this host" in lines[0] and "CRIU did not run" in lines[1]
    assert tree_digest(cp.images_dir) == before
    assert wait_gone(cp.holder.pids.values()) == []


def test_criu_check_adds_the_aio_check(shim_path: str) -> None:
    ok = _run(shim_path, "check")
    assert ok.returncode == 0 and "Looks good." in ok.stdout + ok.stderr
    refused = _run(shim_path, "check", env={"CRIU_AIO_KERNEL": "sim:cpus=64"})
    assert refused.returncode == exitcodes.ERROR
    assert "AIO check failed" in refused.stderr and "Looks good." not in refused.stdout
    # v3.10-style sizing: CRIU's formula is wrong from 3 pages up. By default the
    # check fails there and names the sizes criu-aio fixes; with the "host"
    # policy only what criu-aio cannot fix fails it; "off" only logs.
    v310 = {"CRIU_AIO_KERNEL": "sim:v3.10"}
    strict = _run(shim_path, "check", env=v310)
    assert strict.returncode == exitcodes.ERROR
    assert "criu-aio converges for 3-" in strict.stderr and "Looks good." not in strict.stdout
    host = _run(shim_path, "check", env={**v310, "CRIU_AIO_CHECK_POLICY": "host"})
    assert host.returncode == 0 and "Looks good." in host.stdout + host.stderr
    still = _run(
        shim_path, "check", env={"CRIU_AIO_KERNEL": "sim:cpus=64", "CRIU_AIO_CHECK_POLICY": "host"}
    )
    assert still.returncode == exitcodes.ERROR and "5 pages" in still.stderr
    off = _run(
        shim_path, "check", env={"CRIU_AIO_KERNEL": "sim:cpus=64", "CRIU_AIO_CHECK_POLICY": "off"}
    )
    assert off.returncode == 0 and "Looks good." in off.stdout + off.stderr
    feature = _run(
        shim_path, "check", "--feature", "mem_dirty_track", env={"CRIU_AIO_KERNEL": "sim:cpus=64"}
    )
    assert "AIO check failed" not in feature.stderr  # CRIU's own feature check only


def test_rpc_client_finding_criu_on_path(
    shim_path: str, checkpoint, restore_and_verify, pycriu: PyCriu, tmp_path: Path, criu_bin: str
) -> None:
    """runc >= 1.2, crun and go-criu exec `criu` from PATH: they get criu-aio, then CRIU."""
    from rpc_raw_client import call

    from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2

    env = {"PATH": shim_path}
    version = call("criu", rpc_pb2.criu_req(type=rpc_pb2.VERSION), env=env)
    alone = call(criu_bin, rpc_pb2.criu_req(type=rpc_pb2.VERSION))
    assert version.resp == alone.resp and version.resp.success

    cp = checkpoint([RingSpec(n_for_pages(3), 1)])
    forge(cp, pycriu)

    def via_path(cp, pidfile: Path):
        from testbed.harness import CriuRun

        fd = os.open(cp.images_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
            req.opts.images_dir_fd = fd
            req.opts.log_file = "restore.log"
            ex = call("criu", req, env=env)
        finally:
            os.close(fd)
        assert ex.resp.success, ex.resp.cr_errmsg
        return CriuRun(("criu", "swrk"), 0, cp.images_dir / "restore.log", 0.0)

    restore_and_verify(cp, via_path)
    assert "rewrote mm-" in (tmp_path / "criu-aio.log").read_text()
