"""What a kernel-lab test runs against: a Debian suite booted with N possible CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "scripts" / "kernel-lab"


@dataclass(frozen=True)
class Target:
    """One kernel booted with one possible-CPU count."""

    suite: str
    cpus: int

    @property
    def spec(self) -> str:
        """The `--kernel` spec booting this target (a VM per use)."""
        done = subprocess.run(
            [sys.executable, str(LAB), "spec", self.suite, "--cpus", str(self.cpus)],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    @property
    def release(self) -> str:
        cache = Path(os.environ.get("CRIU_AIO_LAB_CACHE", "/var/cache/criu-aio/kernels"))
        return str(json.loads((cache / self.suite / "kernel.json").read_text())["release"])
