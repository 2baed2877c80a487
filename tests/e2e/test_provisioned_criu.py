"""The CRIU scripts/provision-criu.sh provides: works, stays private, leaks nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from testbed.harness import Checkpoint, Criu

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PREFIX = Path("/opt/criu-aio")
LAUNCHER = PREFIX / "criu" / "bin" / "criu"


def _is_private(criu_bin: str) -> bool:
    return Path(criu_bin).resolve() == LAUNCHER.resolve()


def test_provisioning_again_is_a_no_op(criu_bin: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("provision-criu.sh needs root")
    if not (PREFIX / "criu-path").is_file():
        pytest.skip("CRIU was not provisioned by scripts/provision-criu.sh here")
    recorded = (PREFIX / "criu-path").read_text()
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "provision-criu.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "already provisioned" in proc.stdout
    assert (PREFIX / "criu-path").read_text() == recorded


def test_private_criu_leaves_system_alone(criu_bin: str) -> None:
    if not _is_private(criu_bin):
        pytest.skip(f"the CRIU under test ({criu_bin}) is not the private one")
    # The system's apt never heard of trixie: the private apt state is elsewhere.
    lists = Path("/var/lib/apt/lists")
    if lists.is_dir():
        assert not [p.name for p in lists.iterdir() if "trixie" in p.name]
    assert any((PREFIX / "apt" / "state" / "lists").glob("*trixie*"))
    # /usr/sbin/criu, if any, is not ours.
    system = Path("/usr/sbin/criu")
    if system.exists():
        assert system.resolve() != (PREFIX / "criu" / "root" / "usr" / "sbin" / "criu")
    # The launcher uses the unpacked loader's --library-path, never LD_LIBRARY_PATH.
    text = LAUNCHER.read_text()
    assert "--library-path" in text
    assert "LD_LIBRARY_PATH" not in text


def test_tools_criu_runs_see_no_private_libraries(checkpoint, criu: Criu, tmp_path: Path) -> None:
    # CRIU execs action scripts (here a system /bin/sh script); with a private
    # CRIU they must get the system's libraries, as with a system CRIU.
    out = tmp_path / "action-env"
    script = tmp_path / "action.sh"
    script.write_text(f"#!/bin/sh\n{{ echo ===; env; }} >> {out}\n")
    script.chmod(0o755)
    cp: Checkpoint = checkpoint([1], dump_args=["--action-script", str(script)])
    assert cp.dump.ok
    runs = out.read_text().split("===")[1:]
    assert runs, "the action script never ran"
    for env in runs:
        assert "CRTOOLS_SCRIPT_ACTION=" in env  # run by CRIU
        assert "LD_LIBRARY_PATH" not in env
        assert str(PREFIX / "criu" / "root") not in env
