"""Build agent/criu-aio-probe for tests (into a temporary folder, the tree stays clean).

Under CI=true a missing compiler fails the test; elsewhere it skips with the
package to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def build_agent(out_dir: Path) -> Path:
    """scripts/build-agent.sh --out out_dir/criu-aio-probe; returns the binary."""
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        why = "gcc not found: apt-get install gcc libc6-dev to build criu-aio-probe"
        if IN_CI:
            pytest.fail(f"CI=true but {why}", pytrace=False)
        pytest.skip(why)
    out = out_dir / "criu-aio-probe"
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-agent.sh"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"building criu-aio-probe failed:\n{done.stderr}"
    return out
