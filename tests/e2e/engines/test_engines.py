"""criu-aio installed as `criu` in front of real container engines.

For podman 4.3.1 + crun 1.21, podman 4.3.1 + runc 1.1.5 and containerd 1.6 +
ctr (runc 1.1.5 under containerd-shim-runc-v2), as scripts/provision-engines.sh
sets them up (docs/engines-here.md):

1. a container runs the static holder with AIO rings of 1, 2 and 3 pages, each
   with completed events nobody reaped yet;
2. the engine checkpoints it with the real CRIU (the slot's `criu`), and the
   checkpoint's nr_req are forged as another CRIU build writes them (Debian's
   pycriu, through the engine's own format: podman's export archive,
   containerd's checkpoint image in the content store);
3. restored with the real CRIU as `criu`: fails, and the log the runtime
   points to says `wrong aio`;
4. restored with criu-aio's launcher as `criu`, configured by its config file
   alone (no CRIU_AIO_* reaches the engine; the real CRIU is not on PATH):
   restores, every ring holds its dumped events and takes new I/O;
5. restored with criu-aio on a simulated 64-CPU kernel (the config's `kernel`),
   where none of these rings can exist: refused; the runtime's output or the
   log it points to gives criu-aio's reason; the images are untouched and
   nothing of the container runs.

They drive shared machine state (cgroups, /run), so they run under CI=true
(where a missing engine fails them) or with CRIU_AIO_ENGINES=1.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from testbed.containerd import Containerd, ContainerdDaemon
from testbed.engines import (
    CRUN,
    ENABLE,
    CriuSlot,
    Shared,
    descendants,
    engine_problem,
    reap_adopted,
)
from testbed.harness import PyCriu, RingSpec, check_fresh, n_for_pages, subreaper, verify_restored
from testbed.podman import Podman

pytestmark = [pytest.mark.criu, pytest.mark.e2e, pytest.mark.engines]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ENABLED = IN_CI or os.environ.get("CRIU_AIO_ENGINES") == "1"
ENGINE_IDS = ["podman-crun", "podman-runc", "containerd"]
RINGS = [RingSpec(n_for_pages(1), 1), RingSpec(n_for_pages(2), 2), RingSpec(n_for_pages(3), 1)]
# No ring below 5 pages exists with 64 possible CPUs (DESIGN.md 3c).
IMPOSSIBLE_HERE = "sim:cpus=64"
REASON = "cannot exist on this host"
PROVISION = Path(__file__).resolve().parents[3] / "scripts" / "provision-engines.sh"


@pytest.fixture(scope="session")
def engines_enabled() -> None:
    """Skip the module unless CI=true or CRIU_AIO_ENGINES=1 (before any other fixture works)."""
    if not ENABLED:
        pytest.skip(
            "engine tests run under CI=true or with CRIU_AIO_ENGINES=1 "
            f"(engines provisioned by {ENABLE})"
        )
    if os.geteuid() != 0:
        _unavailable("the engine tests need root")


def _unavailable(why: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI=true but {why}; {ENABLE}", pytrace=False)
    pytest.skip(f"{why}; {ENABLE}")


@pytest.fixture(scope="module")
def adopting() -> Iterator[None]:
    """The module runs as a subreaper: conmon, shims and their leftovers are reaped."""
    with subreaper():
        yield
        reap_adopted()


@pytest.fixture(scope="module")
def containerd_daemon(
    engines_enabled: None, tmp_path_factory: pytest.TempPathFactory, criu_bin: str, adopting: None
) -> Iterator[ContainerdDaemon]:
    # The shims take PATH from the daemon once: its slot lives as long as it does.
    root = tmp_path_factory.mktemp("containerd")
    daemon = ContainerdDaemon(root / "daemon", CriuSlot(root / "slot", criu_bin))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@dataclass
class Bed:
    engine: Podman | Containerd
    slot: CriuSlot
    shared: Shared


@pytest.fixture
def bed(
    engines_enabled: None,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    criu_bin: str,
    adopting: None,
) -> Iterator[Bed]:
    engine_id: str = request.param
    problem = engine_problem(engine_id)
    if problem is not None:
        _unavailable(f"{engine_id} cannot run: {problem}")
    shared = Shared(tmp_path / "shared")
    engine: Podman | Containerd
    if engine_id == "containerd":
        daemon: ContainerdDaemon = request.getfixturevalue("containerd_daemon")
        slot = daemon.slot
        engine = Containerd(daemon, shared, tmp_path)
    else:
        slot = CriuSlot(tmp_path / "slot", criu_bin)
        engine = Podman(engine_id.split("-", 1)[1], slot, shared, tmp_path)
    try:
        yield Bed(engine, slot, shared)
    finally:
        engine.close()


@pytest.mark.parametrize("bed", ENGINE_IDS, indirect=True)
def test_forged_checkpoint_restores_through_criu_aio(bed: Bed, pycriu: PyCriu) -> None:
    engine, slot, shared = bed.engine, bed.slot, bed.shared
    name = f"criu-aio-{os.getpid()}-{time.monotonic_ns() % 10**6}"

    slot.plain()
    engine.start_holder(name, RINGS)
    shared.wait_ready()
    before = shared.reports(engine.holder_pids(name))
    check_fresh(before, RINGS)
    forged = engine.checkpoint(name, pycriu)
    assert sum(len(rings) for rings in forged.forged.values()) == len(RINGS)

    # The real CRIU as `criu`: the restorer's io_setup makes rings of other sizes.
    alone = engine.restore(forged, f"{name}-plain")
    assert not alone.run.ok, "the engine restored a forged checkpoint with CRIU alone"
    assert alone.log is not None, f"no log named in: {alone.run.output}"
    assert "wrong aio" in alone.log_text(), alone.log_text()[-2000:]
    engine.remove(f"{name}-plain")

    # criu-aio as `criu`, set up by its config file alone.
    slot.criu_aio()
    fixed = engine.restore(forged, f"{name}-fixed")
    assert fixed.run.ok, (
        f"{fixed.run.describe()}\n{fixed.log_text()[-2000:]}\ncriu-aio: {slot.log_text()}"
    )
    assert "rewrote mm-" in slot.log_text()
    pids = engine.holder_pids(f"{name}-fixed")
    after = shared.reports(pids)
    exercised = shared.reports(pids, exercise=True)
    verify_restored(before, after, exercised)
    print(f"\n[{bed.engine.__class__.__name__}] restored through criu-aio:\n{fixed.run.output}")
    engine.remove(f"{name}-fixed")

    # A host where these rings cannot exist: refused before CRIU starts.
    slot.criu_aio(kernel=IMPOSSIBLE_HERE)
    logged = len(slot.log_text())
    refused = engine.restore(forged, f"{name}-refused")
    assert not refused.run.ok, "criu-aio let an impossible restore through"
    assert refused.log is not None, f"no log named in: {refused.run.output}"
    shown = refused.log_text()
    assert REASON in shown, (
        f"the log the runtime names ({refused.log}) lacks criu-aio's reason:\n{shown!r}\n"
        f"runtime said: {refused.run.output}"
    )
    assert "rewrote" not in slot.log_text()[logged:]
    # The images criu-aio was given (unpacked by the engine from the forged checkpoint).
    assert refused.images_dir is not None, "the engine kept no unpacked images to compare"
    assert forged.differences(refused.images_dir) == []
    if isinstance(engine, Containerd):
        assert engine.criu_blob_intact(forged)
    assert engine.state(f"{name}-refused") != "running"
    assert engine.leftovers(f"{name}-refused") == {}
    # No CRIU or criu-aio of this restore is left (orphans would be ours: subreaper).
    assert {p: c for p, c in descendants(os.getpid()).items() if "criu" in c} == {}
    print(f"refused by criu-aio:\n{refused.run.output}\n{refused.log}:\n{shown}")


def test_provisioning_again_only_checks(engines_enabled: None) -> None:
    if not CRUN.is_file():
        _unavailable(f"no private crun at {CRUN}: the engines were not provisioned")
    crun_before = CRUN.stat()
    proc = subprocess.run(
        ["bash", str(PROVISION)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "already provisioned" in proc.stdout, proc.stdout
    assert CRUN.stat().st_mtime_ns == crun_before.st_mtime_ns
    # crun 1.21 with CRIU, started by its own loader, which finds libcriu.so.2.
    version = subprocess.run([str(CRUN), "--version"], capture_output=True, text=True, check=True)
    assert "crun version 1.21" in version.stdout and "+CRIU" in version.stdout
    interpreter = subprocess.run(
        ["patchelf", "--print-interpreter", str(CRUN)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert interpreter.startswith(str(CRUN.parents[1] / "root") + "/")
    # Hybrid mode: cgroup v2 holds no controller crun would refuse.
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    assert not controllers.exists() or controllers.read_text().strip() == ""
