"""The interposer's log: a file or syslog, levels, and never stdio in swrk mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from criu_aio_plugin.rpc.log import Log


def test_file_target_levels_and_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "aio.log"
    monkeypatch.setenv("CRIU_AIO_LOG", f"file:{path}")
    monkeypatch.setenv("CRIU_AIO_LOG_LEVEL", "warning")
    log = Log(stdio_allowed=False)
    log.info("not written")
    log.warning("ring 0x7f00 refused")
    log.error("and this")
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"criu-aio[{os.getpid()}] warning: ring 0x7f00 refused")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Log(str(path), stdio_allowed=False, level="debug").debug("appended")
    assert path.read_text().splitlines()[-1].endswith("debug: appended")


def test_none_writes_nothing(tmp_path: Path) -> None:
    log = Log("none", stdio_allowed=False)
    log.error("dropped")
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_unwritable_file_never_raises(tmp_path: Path) -> None:
    log = Log(str(tmp_path / "missing" / "aio.log"), stdio_allowed=False)
    log.error("the log cannot cost a restore")  # swallowed


@pytest.mark.parametrize(("allowed", "kind"), [(True, "stderr"), (False, "syslog")])
def test_stderr_only_where_stdio_is_ours(allowed: bool, kind: str) -> None:
    assert Log("stderr", stdio_allowed=allowed).kind == kind


def test_swrk_default_never_touches_stdio() -> None:
    """Default target (syslog) in a child: nothing appears on its stdout/stderr."""
    code = (
        "from criu_aio_plugin.rpc.log import Log\n"
        "log = Log(stdio_allowed=False)\n"
        "log.error('to syslog, not stderr')\n"
        "log.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIU_AIO_LOG")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert (proc.stdout, proc.stderr) == (b"", b"")
