"""The installed `criu-aio` console script: --version, --help, unknown commands."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import criu_aio_plugin
from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.main import COMMANDS


def _console_script() -> str:
    beside = Path(sys.executable).parent / "criu-aio"
    if beside.is_file():
        return str(beside)
    found = shutil.which("criu-aio")
    if found is None:
        pytest.fail("no criu-aio console script: run `pip install -e '.[test]'` (scripts/setup.sh)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_console_script(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version_from_console_script() -> None:
    proc = _run("--version")
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert proc.stdout.strip() == f"criu-aio {criu_aio_plugin.__version__}"
    # The installed distribution's metadata says the same.
    assert importlib.metadata.version("criu-aio-plugin") == criu_aio_plugin.__version__
    assert _run("-V").stdout == proc.stdout


def test_console_script_entry_point_is_main() -> None:
    eps = importlib.metadata.entry_points(group="console_scripts")
    (ep,) = [e for e in eps if e.name == "criu-aio"]
    assert ep.value == "criu_aio_plugin.cli.main:main"


def test_help_lists_the_subcommands_that_exist() -> None:
    proc = _run("--help")
    assert proc.returncode == exitcodes.OK, proc.stderr
    listed = set()
    in_commands = False
    for line in proc.stdout.splitlines():
        if line == "commands:":
            in_commands = True
        elif in_commands and line.startswith("  "):
            listed.add(line.split()[0])
        elif in_commands:
            break
    present = {name for name, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod)}
    assert listed == present
    assert "CRIU_AIO_CRIU" in proc.stdout  # says how the real CRIU is found
    assert _run().stdout == proc.stdout  # no arguments: the same help


def test_unknown_command_is_a_usage_error() -> None:
    proc = _run("no-such-command")
    assert proc.returncode == exitcodes.USAGE
    assert "no-such-command" in proc.stderr
    assert "--help" in proc.stderr
    assert proc.stdout == ""


def test_python_dash_m_matches_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _run("--version").stdout
