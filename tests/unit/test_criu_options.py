"""CRIU's command line as CRIU reads it: criu_options against glibc's own getopt_long.

The oracle is glibc's getopt_long, called through ctypes with CRIU's option
table (the facts in criu_options; tests/e2e/test_criu_options_real.py checks
those facts against the real CRIU binary). So what is tested here is that our
getopt is glibc's: permutation, ``--``, abbreviations and their ambiguity,
required and optional values, short-option clusters, POSIXLY_CORRECT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from criu_aio_plugin import criu_options
from criu_aio_plugin.criu_options import (
    LONG_OPTIONS,
    NO_ARG,
    OPTIONAL,
    REQUIRED,
    SHORT_OPTS,
    CommandLine,
    Scan,
    command_word,
    config_words,
    getopt,
    parse_command_line,
)


class _Option(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("has_arg", ctypes.c_int),
        ("flag", ctypes.POINTER(ctypes.c_int)),
        ("val", ctypes.c_int),
    ]


class GlibcGetopt:
    """glibc's getopt_long with CRIU's tables."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self.optind = ctypes.c_int.in_dll(self.libc, "optind")
        self.opterr = ctypes.c_int.in_dll(self.libc, "opterr")
        self.optarg = ctypes.c_char_p.in_dll(self.libc, "optarg")
        self.flags: dict[str, ctypes.c_int] = {}
        table = []
        self.idents: list[str] = []
        for name, (has_arg, ident) in LONG_OPTIONS.items():
            if ident.startswith("&"):
                field, _, value = ident[1:].partition("=")
                var = self.flags.setdefault(field, ctypes.c_int(0))
                table.append(_Option(name.encode(), has_arg, ctypes.pointer(var), int(value)))
            else:
                val = int(ident) if ident.isdigit() else ord(ident)
                table.append(_Option(name.encode(), has_arg, None, val))
            self.idents.append(ident)
        table.append(_Option(None, 0, None, 0))
        self.table = (_Option * len(table))(*table)
        self.libc.getopt_long.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_char_p,
            ctypes.POINTER(_Option),
            ctypes.POINTER(ctypes.c_int),
        ]

    def scan(self, words: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str], bool]:
        """(options, operands after permutation, error?) as glibc sees ``criu WORDS``."""
        argv = (ctypes.c_char_p * (len(words) + 2))(
            b"criu", *[w.encode("utf-8", "surrogateescape") for w in words], None
        )
        self.optind.value = 0  # full re-initialisation, as CRIU does before each pass
        self.opterr.value = 0
        options: list[tuple[str, str | None]] = []
        index = ctypes.c_int(-1)
        while True:
            index.value = -1
            ret = self.libc.getopt_long(
                len(words) + 1, argv, SHORT_OPTS.encode(), self.table, index
            )
            if ret == -1:
                break
            if ret == ord("?"):
                return options, [], True
            value = self.optarg.value
            text = None if value is None else value.decode("utf-8", "surrogateescape")
            if ret == 0:
                ident = self.idents[index.value]
            elif ret < 256:
                ident = chr(ret)
            else:
                ident = str(ret)
            options.append((ident, text))
        rest = [argv[i] for i in range(self.optind.value, len(words) + 1)]
        return options, [w.decode("utf-8", "surrogateescape") for w in rest if w is not None], False


@pytest.fixture(scope="module")
def glibc() -> GlibcGetopt:
    return GlibcGetopt()


@pytest.fixture
def posix_env() -> Iterator[None]:
    old = os.environ.pop("POSIXLY_CORRECT", None)
    yield
    if old is not None:
        os.environ["POSIXLY_CORRECT"] = old


def _agree(glibc: GlibcGetopt, words: Sequence[str], posix: bool = False) -> Scan:
    ours = getopt(words, posixly_correct=posix)
    options, operands, error = glibc.scan(words)
    assert bool(ours.error) == error, (words, ours)
    assert list(ours.options) == options, words
    if not error:
        assert [w for _, w in ours.operands] == operands, words
        assert all(words[i] == w for i, w in ours.operands)
    return ours


# --- option by option, in front of `restore` and `check` ---------------------------

LONG_NAMES = sorted(LONG_OPTIONS)


@pytest.mark.parametrize("command", ["restore", "check"])
@pytest.mark.parametrize("name", LONG_NAMES)
def test_every_long_option_in_front_of_the_command(
    glibc: GlibcGetopt, posix_env: None, name: str, command: str
) -> None:
    has_arg, _ = LONG_OPTIONS[name]
    tail = [command, "-D", "/img", "-W", "/work", "-o", "run.log"]
    if name in ("help", "version"):
        assert command_word([f"--{name}", *tail]) == (-1, None)
        return
    if has_arg == REQUIRED:
        separate = _agree(glibc, [f"--{name}", "VALUE", *tail])
        attached = _agree(glibc, [f"--{name}=VALUE", *tail])
        assert separate.options[0] == attached.options[0] == (LONG_OPTIONS[name][1], "VALUE")
        # the next word is the value, even when it looks like a command
        swallowed = _agree(glibc, [f"--{name}", command, "restore"])
        assert swallowed.operands == ((2, "restore"),)
    elif has_arg == OPTIONAL:
        bare = _agree(glibc, [f"--{name}", *tail])  # the command is not its value
        assert bare.options[0] == (LONG_OPTIONS[name][1], None)
        attached = _agree(glibc, [f"--{name}=VALUE", *tail])
        assert attached.options[0] == (LONG_OPTIONS[name][1], "VALUE")
    else:
        _agree(glibc, [f"--{name}", *tail])
        refused = _agree(glibc, [f"--{name}=VALUE", *tail])
        assert "doesn't allow an argument" in refused.error
    words = [f"--{name}", *(["VALUE"] if has_arg == REQUIRED else []), *tail]
    line = parse_command_line(words, environ={}, read=lambda _: None)
    assert (line.command, line.images_dir, line.work_dir, line.log_file) == (
        command,
        "/img",
        "/work",
        "run.log",
    )
    assert command_word(words) == (words.index(command), command)
    # and after the command word (getopt permutes)
    after = _agree(glibc, [command, *words[: words.index(command)], "-D", "/x"])
    assert after.operands == ((0, command),)


@pytest.mark.parametrize("command", ["restore", "check"])
@pytest.mark.parametrize("letter", sorted(set(SHORT_OPTS) - {":"}))
def test_every_short_option_in_front_of_the_command(
    glibc: GlibcGetopt, posix_env: None, letter: str, command: str
) -> None:
    kind = criu_options.SHORT_OPTIONS[letter]
    if letter in "hV":
        assert command_word([f"-{letter}", command]) == (-1, None)
        return
    if kind == REQUIRED:
        for words in ([f"-{letter}", "v", command], [f"-{letter}v", command]):
            assert _agree(glibc, words).operands[0][1] == command
    elif kind == OPTIONAL:
        assert _agree(glibc, [f"-{letter}", command]).operands == ((1, command),)
        assert _agree(glibc, [f"-{letter}4", command]).options == ((letter, "4"),)
    else:
        assert _agree(glibc, [f"-{letter}", command]).operands == ((1, command),)
        assert _agree(glibc, [f"-d{letter}", command]).operands == ((1, command),)  # a cluster


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["--manage-cgroups", "restore", "-D", "d"], "restore"),  # issue 12: optional value
        (["--file-validation", "filesize", "restore"], "restore"),
        (["-S", "restore"], "restore"),  # -S takes no value
        (["-J", "net:/x", "check"], "check"),
        (["--skip-mnt", "/m", "--enable-fs", "x", "--close", "5", "restore"], "restore"),
        (["--prev-images-dir", "../p", "restore"], "restore"),
        (["--images", "d", "restore"], "restore"),  # unique prefix of images-dir
        (["--no-d", "restore"], None),  # ambiguous: no-daemon, no-deprecated, ...
        (["--log", "x", "restore"], None),  # ambiguous: log-file, log-pid
        (["--restore-d", "restore"], "restore"),
        (["-v4", "restore"], "restore"),
        (["-v", "4", "restore"], None),  # -v's value must be attached: 4 is the command
        (["--", "-D", "restore"], None),  # after --: two operands
        (["-D", "d", "--", "restore"], "restore"),
        (["restore", "-h"], None),
        (["-D", "--help", "restore"], None),  # pre_parse: any word -h/--help
        (["restore", "--bogus"], None),
        (["restore", "extra"], None),  # excessive parameter
        (["-D"], None),
        ([], None),
    ],
)
def test_command_words(
    glibc: GlibcGetopt, posix_env: None, words: list[str], expected: str | None
) -> None:
    line = parse_command_line(words, environ={}, read=lambda _: None)
    assert line.command == expected, line
    if "-h" not in words and "--help" not in words:
        _agree(glibc, words)


def test_posixly_correct_stops_at_the_first_operand(glibc: GlibcGetopt) -> None:
    os.environ["POSIXLY_CORRECT"] = "1"
    try:
        scan = _agree(glibc, ["-v4", "restore", "-D", "d"], posix=True)
    finally:
        del os.environ["POSIXLY_CORRECT"]
    assert [w for _, w in scan.operands] == ["restore", "-D", "d"]
    line = parse_command_line(["restore", "-D", "d"], environ={"POSIXLY_CORRECT": "1"})
    assert line.command is None and "excessive" in line.error  # as CRIU says


WORDS = st.sampled_from(
    [
        "restore",
        "check",
        "--",
        "-",
        "-D",
        "-Dimg",
        "-W",
        "-o",
        "x.log",
        "-dS",
        "-dD",
        "-v",
        "-vvv",
        "-v4",
        "-x",
        "-x3",
        "-t",
        "-q",
        "-:",
        "--images-dir",
        "--images-dir=i",
        "--work",
        "--log-f=l",
        "--log",
        "--manage-cgroups",
        "--manage-cgroups=full",
        "--cpu-cap=fpu",
        "--verb=4",
        "--no-",
        "--no-tls",
        "--tls",
        "--tls-c",
        "--d",
        "--da",
        "--restore-sib",
        "--enable-external",
        "--enable-external-s",
        "--exec-cmd",
        "--ms=1",
        "--file-validation",
        "--=x",
        "--config",
        "value",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=8))
@example(["--images-dir", "--", "restore"])
@example(["-o", "-", "restore"])
def test_getopt_is_glibcs(glibc: GlibcGetopt, words: list[str]) -> None:
    if "POSIXLY_CORRECT" in os.environ:
        pytest.skip("POSIXLY_CORRECT set in the test environment")
    words = [w for w in words if "\0" not in w]
    _agree(glibc, words)


# --- config files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("images-dir /ckpt\n", ["--images-dir", "/ckpt"]),
        ("  tcp-close\n# comment\n\n", ["--tcp-close"]),
        ('log-file "my log"\n', ["--log-file", "my log"]),
        ('lsm-profile "a\\"b"\n', ["--lsm-profile", 'a"b']),
        ("work-dir /w # trailing\n", ["--work-dir", "/w"]),
        ("work-dir\t/w\n", ["--work-dir", "/w"]),
        ("verbosity 4 # x\n", ["--verbosity", "4"]),
        ('empty ""\n', ["--empty", ""]),
        ("   ", ["--"]),  # a last line of blanks without newline: C makes it "--"
        ("images-dir /a b c\n", None),  # "Unsupported configuration file format"
        ('x "unterminated\n', None),
    ],
)
def test_config_file_lines(text: str, words: list[str] | None) -> None:
    assert config_words(text) == words


def test_config_files_in_criu_order() -> None:
    files = {
        "/etc/criu/default.conf": "images-dir /global\nwork-dir /gw\n",
        "/home/u/.criu/default.conf": "images-dir /user\n",
        "/env.conf": "log-file env.log\n",
        "/cmd.conf": "work-dir /cmd\n",
    }
    env = {"HOME": "/home/u", "CRIU_CONFIG_FILE": "/env.conf"}
    line = parse_command_line(["restore"], environ=env, read=files.get)
    assert (line.images_dir, line.work_dir, line.log_file) == ("/user", "/gw", "env.log")
    assert line.log_path() == "/gw/env.log"
    # --config skips the default files; argv wins over every file
    line = parse_command_line(["--config", "/cmd.conf", "restore", "-o", "a.log"], env, files.get)
    assert (line.images_dir, line.work_dir, line.log_file) == (".", "/cmd", "a.log")
    assert line.config_files == ("/env.conf", "/cmd.conf")
    line = parse_command_line(["--no-default-config", "restore", "-D", "/d"], env, files.get)
    assert (line.images_dir, line.work_dir) == ("/d", "/d")  # -W defaults to -D
    bad = {"/etc/criu/default.conf": "no-such-option\n"}
    line = parse_command_line(["restore"], environ={}, read=bad.get)
    assert line.command is None and "unrecognized option '--no-such-option'" in line.error


def test_log_to_stderr_and_defaults() -> None:
    line = parse_command_line(["restore", "-o", "-"], environ={}, read=lambda _: None)
    assert line.log_file is None and line.log_path() is None
    line = parse_command_line(["restore"], environ={}, read=lambda _: None)
    assert line == CommandLine("restore", 0)
    assert NO_ARG == 0 and LONG_OPTIONS["images-dir"] == (REQUIRED, "D")
