"""The architecture contracts (scripts/check-contracts) hold, and fail on a violation.

Each violation is made in a copy of the package (never in the checkout): an
upward import, an import cycle, a heavy import in a lean module, a lean module
importing a module outside the lean core, a new top-level module in no layer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-contracts"


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(
        ROOT / "criu_aio_plugin",
        root / "criu_aio_plugin",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    return root


def _append(root: Path, module: str, text: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_the_repository_keeps_every_contract() -> None:
    done = _run(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "layers and cycles: kept" in done.stdout and "lean core: kept" in done.stdout


def test_an_upward_import_breaks_the_layers(copy: Path) -> None:
    # The kernel layer may not know about exit codes (cli), not even lazily.
    _append(
        copy,
        "criu_aio_plugin.kernel.arithmetic",
        "\n\ndef _late():\n    from criu_aio_plugin.cli import exitcodes\n    return exitcodes\n",
    )
    done = _run(copy, "--layers-only")
    assert done.returncode == 1
    assert "criu_aio_plugin.kernel.arithmetic -> criu_aio_plugin.cli.exitcodes" in done.stdout


def test_an_import_cycle_between_siblings_is_broken(copy: Path) -> None:
    _append(
        copy,
        "criu_aio_plugin.images.raw",
        "\n\ndef _late():\n    from criu_aio_plugin.images import journal\n    return journal\n",
    )
    done = _run(copy, "--layers-only")
    assert done.returncode == 1
    assert "acyclic" in done.stdout.lower() or "cycle" in done.stdout.lower()


def test_a_heavy_import_in_a_lean_module_is_refused(copy: Path) -> None:
    _append(copy, "criu_aio_plugin.decision.decide", "\nimport json  # noqa\n")
    done = _run(copy, "--lean-only")
    assert done.returncode == 1
    assert "criu_aio_plugin/decision/decide.py" in done.stdout and "imports json" in done.stdout


def test_lazy_and_type_checking_imports_are_allowed(copy: Path) -> None:
    _append(
        copy,
        "criu_aio_plugin.decision.decide",
        "\nif TYPE_CHECKING:\n    import json\n\n\ndef _late():\n"
        "    import json\n    return json\n",
    )
    assert _run(copy, "--lean-only").returncode == 0


def test_a_lean_module_may_not_pull_in_a_module_outside_the_core(copy: Path) -> None:
    _append(
        copy, "criu_aio_plugin.rpc.swrk", "\nfrom criu_aio_plugin.report import verdict  # noqa\n"
    )
    done = _run(copy, "--lean-only")
    assert done.returncode == 1
    assert "imports criu_aio_plugin.report" in done.stdout


def test_a_module_in_no_layer_is_reported(copy: Path) -> None:
    (copy / "criu_aio_plugin" / "newthing.py").write_text("X = 1\n", encoding="utf-8")
    done = _run(copy, "--layers-only")
    assert done.returncode == 1
    assert "criu_aio_plugin.newthing is in no layer" in done.stdout
