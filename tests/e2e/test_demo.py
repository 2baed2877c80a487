"""`criu-aio demo`: the README's first command runs the main job end to end and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def _holders() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            if "criu-aio-demo-" in exe:
                found.add(int(entry))
    return found


def test_demo_end_to_end(criu_bin: str, tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"  # as scripts/setup.sh writes it: no environment needed
    conf.write_text(f'criu = "{criu_bin}"\n')
    before = set(Path(tempfile.gettempdir()).glob("criu-aio-demo-*"))
    env = {"PATH": "/usr/bin:/bin", "CRIU_AIO_CONFIG": str(conf), "CRIU_AIO_LOG": "none"}
    start = time.monotonic()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "criu-aio"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for step in range(1, 9):
        assert f"[{step}/8]" in text
    assert "wrong aio" in text  # CRIU alone, in its own words
    assert "the 2 unread events came back with the right data" in text
    assert "cannot exist on this host" in text and "exit 4" in text
    assert "demo OK" in text and out.stderr == ""
    assert set(Path(tempfile.gettempdir()).glob("criu-aio-demo-*")) == before  # cleaned up
    assert not _holders()
    assert took < 30, f"the demo took {took:.1f} s"


def test_demo_without_root_or_criu_says_why(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "CRIU_AIO_CONFIG": "none", "CRIU_AIO_LOG": "none"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "criu-aio"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "no real CRIU found" in out.stderr or "needs root" in out.stderr
