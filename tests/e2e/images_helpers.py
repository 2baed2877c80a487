"""Helpers for the image tools' end-to-end tests (real CRIU dumps, Debian's pycriu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testbed.harness import PyCriu

DECODER = Path(__file__).resolve().parent / "pycriu_decode.py"


def pycriu_decode(pycriu: PyCriu, paths: list[Path]) -> dict[str, Any]:
    """``{path: pycriu.images.load(path)}`` computed by Debian's pycriu, in its own env."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(pycriu.path),
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
    }
    proc = subprocess.run(
        [pycriu.python, "-S", str(DECODER), *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    decoded: dict[str, Any] = json.loads(proc.stdout)
    return decoded


def criu_aio(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script's code path (``python -m criu_aio_plugin``)."""
    return subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def mm_images(images_dir: Path) -> list[Path]:
    return sorted(images_dir.glob("mm-*.img"))


def without_nr_req(decoded: dict[str, Any]) -> dict[str, Any]:
    """A pycriu-decoded mm image with every ring's nr_req blanked."""
    doc = json.loads(json.dumps(decoded))
    for entry in doc["entries"]:
        for ring in entry.get("aios", []):
            ring["nr_req"] = None
    return doc
