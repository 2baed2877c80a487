"""criu_options' table against the real CRIU: every long option exists with its argument kind.

criu_options restates CRIU's long option table (criu/config.c); the unit tests
prove our getopt is glibc's given that table. This checks the table itself
against the CRIU binary, through glibc's own messages (CRIU leaves opterr on):

- ``criu --NAME`` as the last word: "requires an argument" iff NAME needs one;
- ``criu --NAME=1``: "doesn't allow an argument" iff NAME takes none;
- neither ever says "unrecognized option" (the name exists) nor "ambiguous".

CRIU may complain about a value afterwards (its own checks): that is CRIU's
"Error (...)" and does not matter here. A few ms per run.
"""

from __future__ import annotations

import subprocess

import pytest

from criu_aio_plugin.criu_options import LONG_OPTIONS, NO_ARG, REQUIRED

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

NAMES = sorted(n for n in LONG_OPTIONS if n not in ("help", "config"))  # pre_parse handles them


def _stderr(criu_bin: str, word: str, tmp_path: object) -> str:
    proc = subprocess.run(
        [criu_bin, "--no-default-config", word],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    return proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_criu_agrees_on_the_option(criu_bin: str, name: str, tmp_path: object) -> None:
    has_arg, _ = LONG_OPTIONS[name]
    bare = _stderr(criu_bin, f"--{name}", tmp_path)
    valued = _stderr(criu_bin, f"--{name}=1", tmp_path)
    for text in (bare, valued):
        assert "unrecognized option" not in text and "ambiguous" not in text, text
    assert ("requires an argument" in bare) == (has_arg == REQUIRED), bare
    assert ("doesn't allow an argument" in valued) == (has_arg == NO_ARG), valued


def test_prefixes_and_ambiguity_as_criu_sees_them(criu_bin: str, tmp_path: object) -> None:
    assert "ambiguous" in _stderr(criu_bin, "--no-d", tmp_path)
    assert "requires an argument" in _stderr(criu_bin, "--images", tmp_path)  # images-dir
    assert "unrecognized option" in _stderr(criu_bin, "--no-such-option", tmp_path)
