"""Shared fixtures: the real CRIU, Debian's pycriu, and the AIO ring test bed.

- criu_bin: path of a CRIU >= 4.0 that passes `criu check`. Under CI=true a
  missing or broken CRIU FAILS the test; elsewhere it skips, saying how to get one.
- pycriu: Debian's pycriu (PyCriu runner, its own environment), same rule.
- holder: factory starting holder trees (criu_aio_plugin/demo/holder.c); everything it
  started or CRIU restored from it is killed at teardown, failing or not.
- checkpoint: factory that starts a holder tree and dumps it with the real CRIU.
- restore_and_verify: restores a checkpoint (plain CRIU by default, or any
  restore function, e.g. through criu-aio) and asserts the restored tree holds
  the same rings in the same state and that they work.

Hypothesis profiles: ``dev`` (the default) runs every property test with few
examples, so the unit tier stays fast; ``fuzz`` (``pytest -m fuzz
--hypothesis-profile=fuzz``; scripts/test.sh runs it as its own gate under CI
or with CRIU_AIO_FUZZ=1) runs the tests marked ``fuzz`` with 10,000 examples
each. Both are derandomized and keep no example database: a run is repeatable.
Tests that set their own max_examples keep it under both profiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testbed.harness import (
    Checkpoint,
    Criu,
    CriuRun,
    Holder,
    PyCriu,
    Restored,
    RingSpec,
    TestbedError,
    check_fresh,
    kill_pids,
    ring_specs,
    start_holder,
    verify_restored,
)

from criu_aio_plugin.errors import CriuError

settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fuzz", settings.get_profile("dev"), max_examples=10_000)
settings.load_profile("dev")  # pytest --hypothesis-profile=fuzz loads the other after this

# Tests never read this machine's /etc/criu-aio/config.toml (scripts/setup.sh writes
# one): a test about config files names its own (CRIU_AIO_CONFIG, a launcher's).
os.environ.setdefault("CRIU_AIO_CONFIG", "none")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PROVISIONED = Path("/opt/criu-aio/criu-path")
ENABLE_HINT = (
    "run `sudo scripts/provision-criu.sh` (installs Debian 13's CRIU 4.1.1 and pycriu "
    "under /opt/criu-aio) or set CRIU_AIO_CRIU to a CRIU >= 4.0"
)


def _unavailable(what: str) -> NoReturn:
    """Fail under CI (the real-CRIU tests must run there), skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true but {what}; {ENABLE_HINT}", pytrace=False)
    pytest.skip(f"{what}; to run these tests, {ENABLE_HINT}")


def _criu_problem(path: str) -> str | None:
    """Why the CRIU at *path* is not usable, or None when `criu check` says Looks good."""
    try:
        ver = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        check = subprocess.run(
            [path, "check"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{path} does not run: {err}"
    version = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in ver.stdout.splitlines()
            if ln.startswith("Version:")
        ),
        "",
    )
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 4:
        return f"{path} is CRIU {version or '(unknown version)'}, criu-aio's tests need >= 4.0"
    if check.returncode != 0 or "Looks good." not in check.stdout + check.stderr:
        first = (check.stderr or check.stdout).strip().splitlines()[:1]
        return f"`{path} check` fails: {first[0] if first else check.returncode}"
    return None


def _candidate_criu() -> tuple[str | None, str]:
    """(path, where it came from): $CRIU_AIO_CRIU, the provisioned one, then PATH."""
    env = os.environ.get("CRIU_AIO_CRIU")
    if env:
        return env, "$CRIU_AIO_CRIU"
    if PROVISIONED.is_file():
        recorded = PROVISIONED.read_text().strip()
        if recorded:
            return recorded, str(PROVISIONED)
    from criu_aio_plugin.criu_locate import find_criu

    try:
        return find_criu(), "PATH"
    except CriuError:
        return None, "PATH"


@pytest.fixture(scope="session")
def criu_bin() -> str:
    """Path of a working CRIU >= 4.0 (fails under CI=true when there is none)."""
    path, source = _candidate_criu()
    if path is None:
        _unavailable("no CRIU found ($CRIU_AIO_CRIU unset, nothing provisioned, none on PATH)")
    problem = _criu_problem(path)
    if problem is not None:
        _unavailable(f"the CRIU from {source} is not usable: {problem}")
    return path


@pytest.fixture(scope="session")
def criu(criu_bin: str) -> Criu:
    """The real CRIU as a harness runner (dump/restore with logs in the images folder)."""
    return Criu(criu_bin)


@pytest.fixture(scope="session")
def pycriu() -> PyCriu:
    """Debian's pycriu in its own environment (fails under CI=true when missing)."""
    found = PyCriu.locate()
    if found is None:
        _unavailable("Debian's pycriu is not provisioned (no /opt/criu-aio/pycriu-path)")
    return found


HolderFactory = Callable[..., Holder]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[HolderFactory]:
    """Factory: holder(rings, *, children=0, grandchildren=0, static=False) -> Holder.

    rings: io_setup sizes (int) or RingSpec(n, pending). The holder runs detached;
    at teardown every process it started, or that CRIU restored from it, is killed
    and must be gone.
    """
    started: list[Holder] = []

    def start(
        rings: Sequence[int | RingSpec],
        *,
        children: int = 0,
        grandchildren: int = 0,
        static: bool = False,
    ) -> Holder:
        workdir = tmp_path / f"holder-{len(started)}"
        h = start_holder(
            workdir, rings, children=children, grandchildren=grandchildren, static=static
        )
        started.append(h)
        return h

    yield start
    survivors: list[int] = []
    for h in started:
        survivors += kill_pids(h.pids.values(), str(h.binary))
    if survivors:
        raise TestbedError(f"holder processes {survivors} survived the test's teardown")


CheckpointFactory = Callable[..., Checkpoint]


@pytest.fixture
def checkpoint(tmp_path: Path, criu: Criu, holder: HolderFactory) -> CheckpointFactory:
    """Factory: checkpoint(rings, *, children=0, grandchildren=0, static=False, dump_args=())
    -> Checkpoint: starts a holder tree, takes its report, dumps it with the real CRIU
    into a fresh images folder (the tree is gone afterwards, its pids free again).
    """
    count = 0

    def make(
        rings: Sequence[int | RingSpec],
        *,
        children: int = 0,
        grandchildren: int = 0,
        static: bool = False,
        dump_args: Sequence[str] = (),
    ) -> Checkpoint:
        nonlocal count
        count += 1
        h = holder(rings, children=children, grandchildren=grandchildren, static=static)
        before = h.reports()
        check_fresh(before, ring_specs(rings))
        images = tmp_path / f"images-{count}"
        run = h.dump(criu, images, *dump_args)
        if not run.ok:
            pytest.fail(f"criu dump failed: {run.describe()}", pytrace=False)
        return Checkpoint(images_dir=images, holder=h, before=before, dump=run)

    return make


RestoreFn = Callable[[Checkpoint, Path], CriuRun]
RestoreAndVerify = Callable[..., Restored]


@pytest.fixture
def restore_and_verify(criu: Criu) -> RestoreAndVerify:
    """restore_and_verify(cp, restore=None) -> Restored.

    restore(cp, pidfile) -> CriuRun does the restore (default: plain `criu restore
    -d`); then the restored tree must report the dumped pids, ring addresses,
    ring_len, nr and head/tail, io_getevents must accept every ring, the pending
    events must come back with the right data, and a new write + read-back
    through io_submit/io_getevents must work on every ring.
    """

    def default_restore(cp: Checkpoint, pidfile: Path) -> CriuRun:
        return criu.restore(cp.images_dir, pidfile)

    def run(cp: Checkpoint, restore: RestoreFn | None = None) -> Restored:
        pidfile = cp.images_dir.parent / f"{cp.images_dir.name}.restored.pid"
        result = (restore or default_restore)(cp, pidfile)
        if not result.ok:
            pytest.fail(f"restore failed: {result.describe()}", pytrace=False)
        if pidfile.exists():
            assert int(pidfile.read_text()) == cp.holder.pid, "restored root has another pid"
        after = cp.holder.reports()
        exercised = cp.holder.reports(exercise=True)
        verify_restored(cp.before, after, exercised)
        return Restored(run=result, after=after, exercised=exercised)

    return run
