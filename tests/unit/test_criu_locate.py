"""find_criu: explicit > $CRIU_AIO_CRIU > PATH, never criu-aio itself (real files in tmp dirs)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from criu_aio_plugin import criu_locate
from criu_aio_plugin.criu_locate import criu_command, find_criu, is_criu_aio_launcher
from criu_aio_plugin.errors import CriuError

TRUE_ELF = shutil.which("true") or "/bin/true"


def _exe(path: Path, text: str | None = None, *, elf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if elf:
        shutil.copyfile(TRUE_ELF, path)
    else:
        path.write_text(text if text is not None else "#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean world: no $CRIU_AIO_CRIU, PATH empty, argv[0] a fake criu-aio console script."""
    monkeypatch.delenv(criu_locate.ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", "")
    me = _exe(
        tmp_path / "venv" / "bin" / "criu-aio",
        "#!/usr/bin/python3\nimport sys\nfrom criu_aio_plugin.cli.main import main\n"
        "sys.exit(main())\n",
    )
    monkeypatch.setattr(sys, "argv", [str(me)])
    # No provisioned CRIU leaks into the hint under test.
    monkeypatch.setattr(criu_locate, "PROVISIONED_PATH_FILE", str(tmp_path / "none"))
    return tmp_path


def _path(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join(str(f) for f in folders))


def test_explicit_wins_over_env_and_path(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _exe(env / "a" / "criu", elf=True)
    from_env = _exe(env / "b" / "criu", elf=True)
    on_path = _exe(env / "c" / "criu", elf=True)
    monkeypatch.setenv(criu_locate.ENV_VAR, str(from_env))
    _path(monkeypatch, on_path.parent)
    assert find_criu(str(explicit)) == str(explicit)
    assert find_criu() == str(from_env)
    monkeypatch.delenv(criu_locate.ENV_VAR)
    assert find_criu() == str(on_path)


def test_explicit_relative_path_is_made_absolute(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _exe(env / "bin" / "my-criu", elf=True)
    monkeypatch.chdir(env)
    assert find_criu("bin/my-criu") == str(env / "bin" / "my-criu")


def test_path_order_and_non_executables(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_exec = env / "p1" / "criu"
    not_exec.parent.mkdir()
    not_exec.write_text("#!/bin/sh\n")  # not executable: skipped
    (env / "p2" / "criu").mkdir(parents=True)  # a folder named criu: skipped
    first = _exe(env / "p3" / "criu", elf=True)
    second = _exe(env / "p4" / "criu", elf=True)
    _path(monkeypatch, env / "missing", not_exec.parent, env / "p2", first.parent, second.parent)
    assert find_criu() == str(first)


def test_symlink_to_self_is_skipped(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = env / "shim" / "criu"
    link.parent.mkdir()
    link.symlink_to(sys.argv[0])
    real = _exe(env / "sbin" / "criu", elf=True)
    _path(monkeypatch, link.parent, real.parent)
    assert find_criu() == str(real)


def test_hard_link_to_self_is_skipped_by_inode(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A hard link to an ELF stand-in for criu-aio: the text test cannot tell,
    # only (st_dev, st_ino) can.
    me = _exe(env / "opt" / "criu-aio-bin", elf=True)
    monkeypatch.setattr(sys, "argv", [str(me)])
    hard = env / "shim" / "criu"
    hard.parent.mkdir()
    os.link(me, hard)
    real = _exe(env / "sbin" / "criu", elf=True)
    _path(monkeypatch, hard.parent, real.parent)
    assert find_criu() == str(real)


@pytest.mark.parametrize(
    "text",
    [
        '#!/bin/sh\nexec criu-aio "$@"\n',
        '#!/bin/sh\nexec /usr/local/bin/criu-aio "$@"\n',
        '#!/bin/sh\nexec python3 -m criu_aio_plugin "$@"\n',
        "#!/opt/venv/bin/python\nfrom criu_aio_plugin.cli.main import main\nmain()\n",
    ],
)
def test_wrapper_scripts_are_skipped(env: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    wrapper = _exe(env / "shim" / "criu", text)
    real = _exe(env / "sbin" / "criu", elf=True)
    _path(monkeypatch, wrapper.parent, real.parent)
    assert is_criu_aio_launcher(str(wrapper))
    assert find_criu() == str(real)


def test_provisioned_launcher_is_not_mistaken_for_criu_aio(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # scripts/provision-criu.sh writes this kind of launcher: "criu-aio" is only
    # a folder name in it.
    launcher = _exe(
        env / "opt" / "criu-aio" / "criu" / "bin" / "criu",
        "#!/bin/sh\n# Written by scripts/provision-criu.sh\n"
        "exec /opt/criu-aio/criu/root/lib64/ld.so --library-path /opt/criu-aio/criu/root/lib "
        '/opt/criu-aio/criu/root/usr/sbin/criu "$@"\n',
    )
    _path(monkeypatch, launcher.parent)
    assert not is_criu_aio_launcher(str(launcher))
    assert find_criu() == str(launcher)


def test_installed_console_script_linked_as_criu_is_skipped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Path(sys.executable).parent / "criu-aio"
    if not console.is_file():
        pytest.skip(f"no installed criu-aio console script next to {sys.executable}")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    link = env / "shim" / "criu"
    link.parent.mkdir()
    link.symlink_to(console)
    copy = env / "copy" / "criu"
    copy.parent.mkdir()
    shutil.copy2(console, copy)  # a copy: different inode, recognised by its text
    real = _exe(env / "sbin" / "criu", elf=True)
    _path(monkeypatch, link.parent, copy.parent, real.parent)
    assert find_criu() == str(real)


def test_none_found_names_the_remedies(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = env / "shim" / "criu"
    link.parent.mkdir()
    link.symlink_to(sys.argv[0])
    _path(monkeypatch, link.parent)
    with pytest.raises(CriuError) as info:
        find_criu()
    text = str(info.value)
    assert "CRIU_AIO_CRIU" in text
    assert "scripts/provision-criu.sh" in text
    assert str(link) in text  # says which criu-aio it skipped
    assert info.value.errno == errno.ENOENT


def test_hint_points_at_provisioned_criu(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provisioned = _exe(env / "prov" / "criu", elf=True)
    record = env / "criu-path"
    record.write_text(f"{provisioned}\n")
    monkeypatch.setattr(criu_locate, "PROVISIONED_PATH_FILE", str(record))
    with pytest.raises(CriuError) as info:
        find_criu()
    assert f"CRIU_AIO_CRIU={provisioned}" in str(info.value)


def test_explicit_and_env_errors(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CriuError, match="does not exist"):
        find_criu(str(env / "nope"))
    plain = env / "plain"
    plain.write_text("x")
    with pytest.raises(CriuError, match="not an executable"):
        find_criu(str(plain))
    with pytest.raises(CriuError, match="criu-aio itself") as info:
        find_criu(sys.argv[0])
    assert info.value.errno == errno.ELOOP
    monkeypatch.setenv(criu_locate.ENV_VAR, str(env / "gone"))
    with pytest.raises(CriuError, match=r"\$CRIU_AIO_CRIU"):
        find_criu()


def test_criu_command_is_an_argv_prefix(env: Path) -> None:
    real = _exe(env / "sbin" / "criu", elf=True)
    assert criu_command(str(real)) == [str(real)]


def test_import_stays_light() -> None:
    # find_criu runs on the swrk path: importing it must not drag in protobuf.
    code = (
        "import sys, criu_aio_plugin.criu_locate as m; m.find_criu.__name__; "
        "print(sorted(n for n in sys.modules if n.startswith(('google', 'subprocess'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
