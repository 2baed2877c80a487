"""Helpers for the interposer's end-to-end tests: criu-aio entry points, pycriu RPC, cleanliness."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.harness import Checkpoint, CriuRun, PyCriu

CLIENT = Path(__file__).resolve().parent / "rpc_client_pycriu.py"
_SHARED: list[Path] = []


def shared_copy(path: Path) -> Path:
    """*path* copied into a folder every uid can read, for code run as another user.

    The checkout may sit under a 0700 folder (a clone into ``mktemp -d``,
    /root): another uid cannot open a script there. The folder is removed when
    the test session ends.
    """
    if not _SHARED:
        folder = Path(tempfile.mkdtemp(prefix="criu-aio-shared-", dir="/tmp"))
        folder.chmod(0o755)
        _SHARED.append(folder)
        atexit.register(shutil.rmtree, folder, True)
    copy = _SHARED[0] / path.name
    if not copy.exists():
        shutil.copyfile(path, copy)
        copy.chmod(0o644)
    return copy


def criu_aio_script() -> str:
    """The installed console script `criu-aio` (the slow but ordinary entry point)."""
    found = shutil.which("criu-aio") or os.path.join(os.path.dirname(sys.executable), "criu-aio")
    assert os.access(found, os.X_OK), f"no criu-aio console script at {found}"
    return found


def install_launcher(directory: Path, name: str = "criu") -> str:
    """`criu-aio install-shim`'s launcher written into *directory*."""
    from criu_aio_plugin.cli.install_shim import install

    directory.mkdir(parents=True, exist_ok=True)
    return install(str(directory), name)


@dataclass(frozen=True)
class RpcResult:
    resp: dict[str, Any]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.resp["success"])


def pycriu_request(
    pycriu: PyCriu,
    binary: str,
    spec: dict[str, Any],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Send one request with Debian's pycriu through *binary* (`BINARY swrk <fd>`)."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key in ("CRIU_AIO_CRIU", "CRIU_AIO_KERNEL", "CRIU_AIO_LOG", "CRIU_AIO_LOG_LEVEL"):
        if key in os.environ:
            full_env[key] = os.environ[key]
    full_env.update(env or {})
    proc = subprocess.run(
        [pycriu.python, "-S", str(CLIENT), str(pycriu.path), binary, json.dumps(spec)],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"pycriu client failed ({proc.returncode}): {proc.stderr}"
    resp: dict[str, Any] = json.loads(proc.stdout)
    return resp


def as_criu_run(resp: dict[str, Any], log: Path, argv: tuple[str, ...]) -> CriuRun:
    """An RPC answer as the harness's CriuRun (for restore_and_verify)."""
    return CriuRun(argv, 0 if resp["success"] else 1, log, 0.0)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under *folder* (logs excluded): proves images untouched."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".log"):
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def criu_did_not_run(log: Path) -> bool:
    """True when CRIU's log file *log* holds nothing of CRIU's: absent, or only the
    reason criu-aio wrote there when it refused the request."""
    if not log.exists():
        return True
    lines = log.read_text().splitlines()
    return bool(lines) and all(") Error (criu-aio): " in line for line in lines)


def processes_named(*names: str) -> list[int]:
    """Pids whose /proc/<pid>/comm is one of *names* (e.g. criu, criu-aio)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            found.append(int(entry))
    return found


def fds_of(pid: int) -> dict[int, str]:
    """fd -> link target of every descriptor of *pid*."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return out


def forge(cp: Checkpoint, pycriu: PyCriu, name: str = "root") -> dict[int, int]:
    return forge_image(pycriu, cp.mm_image(name))


def forge_image(pycriu: PyCriu, mm: Path) -> dict[int, int]:
    """Set every ring's nr_req in *mm* to what another CRIU build writes (pycriu's codec)."""
    return pycriu.forge(mm)
