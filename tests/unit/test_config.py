"""Settings: command line > environment > config file > default, problems reported, never raised."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from criu_aio_plugin import config
from criu_aio_plugin.config import DEFAULT, KEYS, load

ENV_VARS = [env for env, _, _ in KEYS.values()]


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in [*ENV_VARS, config.ENV_CONFIG]:
        monkeypatch.delenv(var, raising=False)
    config.reset()
    yield
    config.reset()


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load({config.ENV_CONFIG: str(tmp_path / "absent.toml")})
    assert {i.key: (i.value, i.source) for i in settings.items} == {
        "criu": ("", DEFAULT),
        "kernel": ("live", DEFAULT),
        "check_policy": ("formula", DEFAULT),
        "log": ("auto", DEFAULT),
        "log_level": ("info", DEFAULT),
    }
    # a file someone named but that is not there is worth saying; the default one is not
    assert settings.problems == (
        f"config file {tmp_path}/absent.toml: No such file or directory; not used",
    )


def test_precedence_command_line_environment_file_default(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '# written by hand\ncriu = "/opt/criu/bin/criu"\nkernel = "sim:cpus=64"\n'
        'check_policy = "host"\nlog_level = "debug"\n',
    )
    config.set_command_line("criu", "/cmd/criu", "launcher /x/criu (install-shim --criu)")
    env = {config.ENV_CONFIG: str(path), "CRIU_AIO_KERNEL": "sim:cpus=2", "CRIU_AIO_LOG": ""}
    settings = load(env)
    assert settings.setting("criu").value == "/cmd/criu"
    assert settings.setting("criu").source.startswith("launcher /x/criu")
    assert (settings.kernel, settings.setting("kernel").source) == (
        "sim:cpus=2",
        "$CRIU_AIO_KERNEL",
    )
    assert (settings.check_policy, settings.setting("check_policy").source) == ("host", str(path))
    assert (settings.log, settings.setting("log").source) == ("auto", DEFAULT)  # empty = unset
    assert settings.log_level == "debug"
    assert settings.problems == ()
    assert (settings.file, settings.file_source, settings.file_read) == (
        str(path),
        "$CRIU_AIO_CONFIG",
        True,
    )


def test_bad_values_and_unknown_keys_are_reported_and_skipped(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        'criu = "relative/criu"\ncheck_policy = "strict"\nlog = 3\ncolour = "blue"\n'
        'log_level = "warning"\n',
    )
    settings = load({config.ENV_CONFIG: str(path), "CRIU_AIO_LOG_LEVEL": "loud"})
    assert settings.criu == "" and settings.check_policy == "formula" and settings.log == "auto"
    assert (settings.log_level, settings.setting("log_level").source) == ("warning", str(path))
    text = "\n".join(settings.problems)
    assert "criu = 'relative/criu': must be an absolute path" in text
    assert "check_policy = 'strict': use one of formula, host, off" in text
    assert "log must be a string, not 3" in text
    assert "unknown key 'colour' ignored" in text
    assert "$CRIU_AIO_LOG_LEVEL='loud': use one of debug, info, warning, error" in text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("criu = \n", "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
        ("x" * (config.MAX_FILE_BYTES + 1), "larger than"),
    ],
)
def test_unusable_files_are_reported(tmp_path: Path, text: str | bytes, problem: str) -> None:
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    settings = load({config.ENV_CONFIG: str(path)})
    assert len(settings.problems) == 1 and problem in settings.problems[0]
    assert settings.kernel == "live"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    done: list[tuple[str, ...]] = []
    worker = threading.Thread(
        target=lambda: done.append(load({config.ENV_CONFIG: str(fifo)}).problems), daemon=True
    )
    worker.start()
    worker.join(5)
    assert done and "not a regular file" in done[0][0]


def test_tables_and_other_toml_go_through_tomllib(tmp_path: Path) -> None:
    path = _file(tmp_path, '[criu-aio]\ncriu = "/x"\n')
    settings = load({config.ENV_CONFIG: str(path)})
    assert "unknown key 'criu-aio'" in settings.problems[0]  # keys are top level


def test_none_reads_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load({config.ENV_CONFIG: "none"})
    assert settings.file == "" and not settings.file_read and settings.problems == ()


def test_current_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV_CONFIG, "none")
    assert config.current().kernel == "live"
    monkeypatch.setenv("CRIU_AIO_KERNEL", "sim:cpus=8")
    assert config.current().kernel == "sim:cpus=8"
    assert config.current() is config.current()  # cached while nothing changes


def test_the_swrk_path_reads_the_file_without_tomllib(tmp_path: Path) -> None:
    """The documented subset is parsed by the lean reader: no tomllib, re or typing."""
    path = _file(tmp_path, 'criu = "/opt/criu-aio/criu/bin/criu" # provisioned\nlog = "none"\n')
    root = Path(config.__file__).resolve().parent.parent
    code = (
        f"import sys; sys.path[:0] = [{str(root)!r}]\n"
        "from criu_aio_plugin import config\n"
        "s = config.current()\n"
        "assert s.criu == '/opt/criu-aio/criu/bin/criu' and not s.problems, s\n"
        "print(sorted(m for m in ('tomllib', 're', 'typing', 'datetime') if m in sys.modules))\n"
    )
    env = {"CRIU_AIO_CONFIG": str(path), "PATH": "/usr/bin:/bin"}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-IS", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr
    assert time.monotonic() - start < 10
