"""Command-line decisions of the `criu` personality and the restore wrap (pure)."""

from __future__ import annotations

import pytest

from criu_aio_plugin.cli.as_criu import command_of
from criu_aio_plugin.cli.wrap import _split_criu, images_dir_of


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
        ([], (-1, None)),
    ],
)
def test_command_word(argv: list[str], expected: tuple[int, str | None]) -> None:
    assert command_of(argv) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "."),
        (["-D", "/ckpt", "-d"], "/ckpt"),
        (["--images-dir", "/a", "-D", "/b"], "/b"),  # last one wins, as getopt
        (["--images-dir=/c"], "/c"),
        (["-D/e"], "/e"),
        (["-d", "--", "-D", "/f"], "."),
    ],
)
def test_images_dir_of(args: list[str], expected: str) -> None:
    assert images_dir_of(args) == expected


def test_own_criu_option_is_taken_out() -> None:
    assert _split_criu(["-D", "d", "--criu-aio-criu", "/x/criu", "-d"]) == (
        "/x/criu",
        ["-D", "d", "-d"],
    )
    assert _split_criu(["--criu-aio-criu=/y", "-v4"]) == ("/y", ["-v4"])
    assert _split_criu(["-D", "d"]) == (None, ["-D", "d"])
