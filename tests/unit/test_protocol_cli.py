"""Command-line decisions of the `criu` personality and the restore wrap (pure)."""

from __future__ import annotations

import pytest

from criu_aio_plugin.cli.wrap import split_own_option
from criu_aio_plugin.criu_options import command_word, parse_command_line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["swrk", "3"], (0, "swrk")),
        (["restore", "-D", "d", "-d"], (0, "restore")),
        (["-v4", "restore", "-D", "d"], (1, "restore")),
        (["-D", "restore", "dump", "-t", "1"], (2, "dump")),  # -D takes a value
        (["-o", "x.log", "--images-dir", "check", "check"], (4, "check")),
        (["--version"], (-1, None)),
        (["--", "check"], (1, "check")),
        (["--manage-cgroups", "restore"], (1, "restore")),  # optional value: only with =
        ([], (-1, None)),
    ],
)
def test_command_word(argv: list[str], expected: tuple[int, str | None]) -> None:
    assert command_word(argv) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "."),
        (["-D", "/ckpt", "-d"], "/ckpt"),
        (["--images-dir", "/a", "-D", "/b"], "/b"),  # last one wins, as getopt
        (["--images-dir=/c"], "/c"),
        (["-D/e"], "/e"),
        (["--imag", "/g"], "/g"),  # an unambiguous prefix, as getopt_long
        (["-d", "--", "-D", "/f"], "."),  # after --, "-D" is an operand (CRIU refuses it)
    ],
)
def test_images_dir(args: list[str], expected: str) -> None:
    line = parse_command_line(["restore", *args], environ={}, read=lambda _: None)
    assert line.images_dir == expected


def test_own_criu_option_is_taken_out() -> None:
    assert split_own_option(["-D", "d", "--criu-aio-criu", "/x/criu", "-d"]) == (
        "/x/criu",
        ["-D", "d", "-d"],
    )
    assert split_own_option(["--criu-aio-criu=/y", "-v4"]) == ("/y", ["-v4"])
    assert split_own_option(["-D", "d"]) == (None, ["-D", "d"])
    assert split_own_option(["--", "--criu-aio-criu=/z"]) == (None, ["--", "--criu-aio-criu=/z"])
