"""`criu-aio config` and what install-shim records in a launcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from criu_aio_plugin.cli.install_shim import install, launcher_text, recorded_settings
from criu_aio_plugin.errors import CriuAioError

SCRIPT = str(Path(sys.executable).parent / "criu-aio")


def _config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_json_says_where_each_value_came_from(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('criu = "/bin/true"\nlog_level = "debug"\nbogus = 1\n')
    out = _config("--config", str(conf), "config", "--json", CRIU_AIO_KERNEL="sim:cpus=8")
    doc = json.loads(out.stdout)
    assert doc["config_file"] == {"path": str(conf), "chosen_by": "--config", "read": True}
    assert doc["settings"]["criu"] == {"value": "/bin/true", "source": str(conf)}
    assert doc["settings"]["kernel"] == {"value": "sim:cpus=8", "source": "$CRIU_AIO_KERNEL"}
    assert doc["settings"]["check_policy"] == {"value": "formula", "source": "default"}
    assert doc["criu"] == "/bin/true"
    assert any("unknown key 'bogus'" in p for p in doc["problems"])
    assert out.returncode == 1  # a problem was reported


def test_text_output_and_a_clean_config(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('criu = "/bin/true"\nlog = "none"\n')
    out = _config("config", CRIU_AIO_CONFIG=str(conf))
    assert out.returncode == 0, out
    assert f"config file: {conf} (read; chosen by $CRIU_AIO_CONFIG)" in out.stdout
    assert "log_level     info       from default" in out.stdout
    assert "real CRIU: /bin/true" in out.stdout and "log goes to: nowhere" in out.stdout


def test_missing_criu_and_bad_kernel_are_problems(tmp_path: Path) -> None:
    out = _config(
        "config", CRIU_AIO_CONFIG="none", PATH=str(tmp_path), CRIU_AIO_KERNEL="sim:cpus=x"
    )
    assert out.returncode == 1
    assert "real CRIU: NOT FOUND" in out.stdout
    assert "kernel = 'sim:cpus=x'" in out.stdout


def test_launcher_records_criu_and_config(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    settings = recorded_settings("/bin/true", str(conf))
    assert settings == {"criu": "/bin/true", "config": str(conf)}
    text = launcher_text("criu", settings)
    assert "raise SystemExit(main(launcher={'criu': '/bin/true', 'config':" in text
    with pytest.raises(CriuAioError, match="does not exist"):
        recorded_settings(str(tmp_path / "nope"), None)
    launcher = install(str(tmp_path / "bin"), "criu-aio-shim", settings=settings)
    out = subprocess.run(
        [launcher, "config", "--json"], env={}, capture_output=True, text=True, check=False
    )
    doc = json.loads(out.stdout)
    assert doc["settings"]["criu"]["source"] == f"launcher {launcher} (install-shim --criu)"
    assert doc["config_file"]["chosen_by"] == f"launcher {launcher} (install-shim --config)"
    # the launcher beats the environment: it is a command line kept in a file
    out = subprocess.run(
        [launcher, "config", "--json"],
        env={"CRIU_AIO_CRIU": "/bin/false"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(out.stdout)["criu"] == "/bin/true"


def test_other_commands_say_what_is_wrong_with_the_settings(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('colour = "blue"\n')
    out = _config("install-shim", "--dir", str(tmp_path), "--print", CRIU_AIO_CONFIG=str(conf))
    assert out.returncode == 0
    assert "criu-aio: config: config file" in out.stderr and "unknown key 'colour'" in out.stderr
