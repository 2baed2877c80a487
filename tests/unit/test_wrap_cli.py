"""`criu restore` through criu-aio, up to the exec: CRIU found first, refusals where users look.

Real processes (the console script, a launcher named `criu`), synthetic images,
a simulated kernel (it refuses, never rewrites) and stand-ins for CRIU
(/bin/echo prints the argv it was given, so an exec is visible on stdout).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from criu_aio_plugin.cli.install_shim import install
from criu_aio_plugin.images import synthetic

SCRIPT = str(Path(sys.executable).parent / "criu-aio")


def _images(folder: Path, pages: list[int]) -> dict[str, str]:
    """Synthetic mm images of rings of *pages* pages; returns their sha256 by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rings = synthetic.rings_for(pages)
    (folder / "mm-10.img").write_bytes(synthetic.mm_image_bytes(rings, 20, 10))
    return _digests(folder)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "CRIU_AIO_CONFIG": "none", "CRIU_AIO_LOG": "none"}
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_criu_found_nothing_touched_reason_in_the_log_file(tmp_path: Path) -> None:
    images = tmp_path / "ckpt"
    before = _images(images, [1, 2])
    (tmp_path / "work").mkdir()
    out = _run(
        [SCRIPT, "restore", "-D", "ckpt", "-W", "work", "-o", "restore.log", "-d"],
        tmp_path,
        PATH=str(tmp_path / "empty"),  # no criu anywhere
    )
    assert out.returncode == 1, out
    assert "cannot run CRIU: no real CRIU found" in out.stderr
    assert _digests(images) == before  # no rewrite, no journal
    log = (tmp_path / "work" / "restore.log").read_text()
    assert "Error (criu-aio): criu-aio: cannot run CRIU: no real CRIU found" in log


def test_refusal_goes_to_stderr_and_into_criu_log_file(tmp_path: Path) -> None:
    images = tmp_path / "ckpt"
    before = _images(images, [1, 3])
    out = _run(
        [SCRIPT, "restore", "--images-dir=ckpt", "--log-file", "r.log"],
        tmp_path,
        CRIU_AIO_CRIU="/bin/echo",
        CRIU_AIO_KERNEL="sim:cpus=256",  # the smallest ring there is 17 pages
    )
    assert out.returncode == 4, out  # some ring cannot exist on this host
    assert "cannot exist on this host" in out.stderr
    assert out.stdout == ""  # CRIU (echo) never ran
    log = (images / "r.log").read_text()  # -o is relative to -W, which defaults to -D
    assert "cannot exist on this host" in log and "CRIU did not run" in log
    assert {k: v for k, v in _digests(images).items() if k != "r.log"} == before


@pytest.mark.parametrize(
    "words",
    [
        ["--manage-cgroups", "restore", "-D", "ckpt"],  # issue 12: optional value
        ["--file-validation", "filesize", "restore", "-D", "ckpt"],
        ["-S", "restore", "-D", "ckpt"],
        ["restore", "-o", "x.log", "--images", "ckpt"],  # an abbreviation
        ["-J", "net:/proc/1/ns/net", "restore", "--", "-D"],  # `-D` after -- : an operand
    ],
)
def test_launcher_finds_the_command_as_criu_does(tmp_path: Path, words: list[str]) -> None:
    """Through a launcher named `criu`: each of these is a restore that gets the AIO work
    (refused on the simulated host), except the last, which CRIU itself would refuse."""
    launcher = install(str(tmp_path / "shim"))
    _images(tmp_path / "ckpt", [1])
    out = _run(
        [launcher, *words], tmp_path, CRIU_AIO_CRIU="/bin/echo", CRIU_AIO_KERNEL="sim:cpus=64"
    )
    if "--" in words:
        # two operands: CRIU's usage error, so CRIU gets the words untouched
        assert out.returncode == 0 and out.stdout.split() == words, out
    else:
        assert out.returncode == 4 and "cannot exist on this host" in out.stderr, out
        assert out.stdout == ""


def test_other_commands_and_bad_lines_go_to_criu_untouched(tmp_path: Path) -> None:
    launcher = install(str(tmp_path / "shim"))
    for words in (["dump", "-t", "1"], ["--bogus", "restore"], ["-v", "4", "restore"]):
        out = _run([launcher, *words], tmp_path, CRIU_AIO_CRIU="/bin/echo")
        assert (out.returncode, out.stdout.split()) == (0, words), out


def test_config_file_names_the_real_criu(tmp_path: Path) -> None:
    """No environment at all but a config file recorded in the launcher (podman's conmon)."""
    conf = tmp_path / "criu-aio.toml"
    conf.write_text('criu = "/bin/echo"\nkernel = "sim:cpus=2"\nlog = "none"\n')
    launcher = install(str(tmp_path / "shim"), settings={"config": str(conf)})
    _images(tmp_path / "ckpt", [1])
    out = subprocess.run(
        [launcher, "restore", "-D", "ckpt"],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout.split()) == (0, ["restore", "-D", "ckpt"]), out
    # the same launcher under another name offers criu-aio's commands: `config` shows it
    shown_as = Path(launcher).with_name("criu-aio-launcher")
    shown_as.symlink_to(launcher)
    shown = subprocess.run(
        [str(shown_as), "config"], env={}, capture_output=True, text=True, timeout=60, check=False
    )
    assert f"config file: {conf} (read; chosen by launcher" in shown.stdout, shown
    assert "criu          /bin/echo" in shown.stdout
