"""criu-aio's settings: command line > environment > config file > built-in default.

Runtimes start criu-aio with an environment of their choosing: podman's conmon
passes only PATH and ``conmon_env_vars``, containerd shims and systemd units
sanitise it too, so a setting that only lives in a user's shell never arrives.
Every entry point (``swrk``, ``service``, the ``criu`` launcher, the CLI)
therefore reads one file, ``/etc/criu-aio/config.toml`` (``$CRIU_AIO_CONFIG``
names another, ``none`` none), and each setting is taken from the first of:

1. the command line: an option of the command (``--criu``, ``--kernel``...),
   or what ``install-shim --criu/--config`` recorded in the launcher that
   started us (a launcher is a command line kept in a file);
2. the environment (``$CRIU_AIO_CRIU``...; see ``KEYS``);
3. the config file;
4. the built-in default.

A bad value is reported and the next source is used; an unknown key or a file
that cannot be read or parsed is reported and skipped. Nothing here raises:
a setting must never stop a request that CRIU alone would have served.
The reports are ``Settings.problems``; entry points log them (or print them
where stderr is ours).

The file is TOML. This runs on ``criu-aio swrk``'s hand-over path, whose whole
budget is 10 ms, and ``import tomllib`` is not lean (~13 ms: re, datetime,
typing, ...; docs/architecture.md). So a strict reader of the subset the documentation
uses (``key = "basic string"``, ``key = 'literal'``, ``true``/``false``,
decimal integers, comments, blank lines) parses it; anything else, valid TOML
or not, goes to ``tomllib``, which is the reference: tests check that wherever
the lean reader answers, ``tomllib`` gives the same answer.

Lean core (docs/architecture.md): imports only os and criu_aio_plugin.values
at module level.
"""

from __future__ import annotations

import os

from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_PATH = "/etc/criu-aio/config.toml"
ENV_CONFIG = "CRIU_AIO_CONFIG"
NO_FILE = "none"
MAX_FILE_BYTES = 64 * 1024
MAX_VALUE_CHARS = 4096

CHECK_POLICIES = ("formula", "host", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_KEYWORDS = ("auto", "syslog", "none", "stderr")

# key -> (environment variable, built-in default, what it means)
KEYS: dict[str, tuple[str, str, str]] = {
    "criu": (
        "CRIU_AIO_CRIU",
        "",
        "the real CRIU (absolute path); empty: `criu` on PATH, never criu-aio itself",
    ),
    "kernel": (
        "CRIU_AIO_KERNEL",
        "live",
        "kernel decisions are made against: live, sim:KEY=VALUE,..., agent:CMD "
        "(a simulated kernel may refuse a restore, never rewrites images)",
    ),
    "check_policy": (
        "CRIU_AIO_CHECK_POLICY",
        "formula",
        "what fails a CHECK: formula (CRIU's nr_req formula is wrong here), "
        "host (only what criu-aio cannot fix either), off",
    ),
    "log": (
        "CRIU_AIO_LOG",
        "auto",
        "auto (syslog when /dev/log answers, else /var/log/criu-aio/criu-aio.log), "
        "syslog, /absolute/file, none; stderr where stderr is ours",
    ),
    "log_level": ("CRIU_AIO_LOG_LEVEL", "info", "debug, info, warning, error"),
}

DEFAULT = "default"


class Setting(Value):
    """One setting's effective value and where it came from."""

    key: str
    value: str
    source: str


class Settings(Value):
    """Every setting, the config file consulted, and what was wrong on the way."""

    items: tuple[Setting, ...]
    file: str
    file_source: str
    file_read: bool
    problems: tuple[str, ...] = ()

    def setting(self, key: str) -> Setting:
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(key)

    def get(self, key: str) -> str:
        return self.setting(key).value

    @property
    def criu(self) -> str:
        return self.get("criu")

    @property
    def kernel(self) -> str:
        return self.get("kernel")

    @property
    def check_policy(self) -> str:
        return self.get("check_policy")

    @property
    def log(self) -> str:
        return self.get("log")

    @property
    def log_level(self) -> str:
        return self.get("log_level")


# --- checking values ------------------------------------------------------------------


def check_value(key: str, value: str, *, from_file: bool) -> str | None:
    """Why *value* is not acceptable for *key*, or None. ``from_file``: paths must be absolute."""
    if len(value) > MAX_VALUE_CHARS:
        return f"longer than {MAX_VALUE_CHARS} characters"
    if not value.isprintable():
        return "holds control characters"
    if key == "criu":
        if from_file and value and not value.startswith("/"):
            return "must be an absolute path"
        return None
    if key == "kernel":
        kind, sep, _ = value.partition(":")
        if kind == "live" and not sep:
            return None
        if kind in ("sim", "agent") and sep:
            return None
        return "use live, sim:KEY=VALUE,... (e.g. sim:cpus=64) or agent:CMD"
    if key == "check_policy":
        return None if value in CHECK_POLICIES else f"use one of {', '.join(CHECK_POLICIES)}"
    if key == "log_level":
        return None if value in LOG_LEVELS else f"use one of {', '.join(LOG_LEVELS)}"
    if key == "log":
        if value in LOG_KEYWORDS:
            return None
        path = value.removeprefix("file:")
        if path.startswith("/"):
            return None
        return f"use {', '.join(LOG_KEYWORDS)} or an absolute file path"
    return "unknown key"


# --- command-line level ---------------------------------------------------------------

# Set by entry points before the settings are first used (main() for a launcher's
# recorded values and `criu-aio --config`); key -> (value, source). "config"
# names the config file.
_command_line: dict[str, tuple[str, str]] = {}
_current: Settings | None = None
_current_env: tuple[str | None, ...] = ()


def set_command_line(key: str, value: str, source: str) -> None:
    """Give *key* a command-line-level value (it beats environment and file)."""
    global _current
    _command_line[key] = (value, source)
    _current = None


def reset() -> None:
    """Forget command-line values and the loaded settings (tests, long-lived callers)."""
    global _current
    _command_line.clear()
    _current = None


def _env_snapshot() -> tuple[str | None, ...]:
    get = os.environ.get
    return (get(ENV_CONFIG), *(get(env_var) for env_var, _, _ in KEYS.values()))


def current() -> Settings:
    """The settings of this process: loaded on first use, again when our variables change."""
    global _current, _current_env
    snapshot = _env_snapshot()
    if _current is None or snapshot != _current_env:
        _current, _current_env = load(), snapshot
    return _current


# --- loading --------------------------------------------------------------------------


def config_path(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(path of the config file to read or "", where that choice came from)."""
    env = os.environ if environ is None else environ
    if "config" in _command_line:
        value, source = _command_line["config"]
    elif env.get(ENV_CONFIG):
        value, source = env[ENV_CONFIG], f"${ENV_CONFIG}"
    else:
        return DEFAULT_PATH, DEFAULT
    return ("" if value == NO_FILE else value), source


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting (see the module docstring); never raises."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    path, path_source = config_path(env)
    file_values: dict[str, object] = {}
    read = False
    if path:
        text, why = _read_file(path)
        if why is not None:
            if path_source != DEFAULT or not why.endswith("No such file or directory"):
                problems.append(f"config file {path}: {why}; not used")
        else:
            assert text is not None
            read = True
            try:
                file_values = parse_toml(text)
            except ValueError as err:
                problems.append(f"config file {path}: not valid TOML ({err}); not used")
    for key in file_values:
        if key not in KEYS:
            problems.append(
                f"config file {path}: unknown key {key!r} ignored (keys: {', '.join(KEYS)})"
            )
    items = []
    for key, (env_var, default, _) in KEYS.items():
        items.append(_resolve(key, env_var, default, env, file_values, path, problems))
    return Settings(
        items=tuple(items),
        file=path,
        file_source=path_source,
        file_read=read,
        problems=tuple(problems),
    )


def _resolve(
    key: str,
    env_var: str,
    default: str,
    env: Mapping[str, str],
    file_values: Mapping[str, object],
    path: str,
    problems: list[str],
) -> Setting:
    if key in _command_line:
        value, source = _command_line[key]
        why = check_value(key, value, from_file=False)
        if why is None:
            return Setting(key, value, source)
        problems.append(f"{key} = {value!r} from {source}: {why}; ignored")
    raw = env.get(env_var)
    if raw:  # set and not empty: an empty variable means "not set", as before
        value = raw.strip()
        why = check_value(key, value, from_file=False)
        if why is None:
            return Setting(key, value, f"${env_var}")
        problems.append(f"${env_var}={value!r}: {why}; ignored")
    if key in file_values:
        found = file_values[key]
        if not isinstance(found, str):
            problems.append(f"config file {path}: {key} must be a string, not {found!r}; ignored")
        else:
            why = check_value(key, found, from_file=True)
            if why is None:
                return Setting(key, found, path)
            problems.append(f"config file {path}: {key} = {found!r}: {why}; ignored")
    return Setting(key, default, DEFAULT)


def _read_file(path: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, why): a regular file of at most MAX_FILE_BYTES, UTF-8.

    Opened non-blocking (a FIFO must not hang a restore) and checked with fstat.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        return None, err.strerror or str(err)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > MAX_FILE_BYTES:
            return None, f"larger than {MAX_FILE_BYTES} bytes"
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as err:
        return None, err.strerror or str(err)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        return None, f"larger than {MAX_FILE_BYTES} bytes"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 (byte {err.start})"


# --- TOML -----------------------------------------------------------------------------


class _NotLean(Exception):
    """Outside the lean reader's subset: ask tomllib."""


def parse_toml(text: str) -> dict[str, object]:
    """The top-level table of TOML *text*; ValueError when it is not valid TOML."""
    try:
        return parse_lean(text)
    except _NotLean:
        pass
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(str(err)) from err


_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS = frozenset("0123456789")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_HEX = frozenset("0123456789abcdefABCDEF")


def _bad_char(ch: str) -> bool:
    """Control characters TOML allows in no string or comment (tab is allowed)."""
    code = ord(ch)
    return (code < 0x20 and ch != "\t") or code == 0x7F


def parse_lean(text: str) -> dict[str, object]:
    """Parse the documented subset of TOML exactly as TOML 1.0 does; raise _NotLean otherwise.

    Strict on purpose: whatever this returns, tomllib returns too (tests prove it).
    """
    out: dict[str, object] = {}
    lines = text.split("\n")
    last = len(lines) - 1
    for index, raw_line in enumerate(lines):
        # CRLF ends a line; a CR anywhere else is not TOML (tomllib says so)
        line = raw_line[:-1] if index < last and raw_line.endswith("\r") else raw_line
        n = len(line)
        i = _skip_ws(line, 0)
        if i == n:
            continue
        if line[i] == "#":
            _comment(line, i)
            continue
        start = i
        while i < n and line[i] in _BARE_KEY:
            i += 1
        if i == start:
            raise _NotLean
        key = line[start:i]
        i = _skip_ws(line, i)
        if i == n or line[i] != "=":
            raise _NotLean
        i = _skip_ws(line, i + 1)
        value, i = _value(line, i)
        i = _skip_ws(line, i)
        if i < n:
            if line[i] != "#":
                raise _NotLean
            _comment(line, i)
        if key in out:
            raise _NotLean
        out[key] = value
    return out


def _skip_ws(line: str, i: int) -> int:
    while i < len(line) and line[i] in " \t":
        i += 1
    return i


def _comment(line: str, i: int) -> None:
    for ch in line[i + 1 :]:
        if _bad_char(ch):
            raise _NotLean


def _value(line: str, i: int) -> tuple[object, int]:
    if i >= len(line):
        raise _NotLean
    ch = line[i]
    if ch == '"':
        return _basic_string(line, i + 1)
    if ch == "'":
        if line.startswith("'''", i):  # a multi-line literal string
            raise _NotLean
        end = line.find("'", i + 1)
        if end < 0:
            raise _NotLean
        body = line[i + 1 : end]
        if any(_bad_char(c) for c in body):
            raise _NotLean
        return body, end + 1
    word_end = i
    while word_end < len(line) and line[word_end] not in " \t#":
        word_end += 1
    word = line[i:word_end]
    if word == "true":
        return True, word_end
    if word == "false":
        return False, word_end
    digits = word[1:] if word[:1] in "+-" else word
    if 0 < len(digits) <= 18 and all(c in _DIGITS for c in digits):
        if len(digits) > 1 and digits[0] == "0":
            raise _NotLean
        return int(word), word_end
    raise _NotLean


def _basic_string(line: str, i: int) -> tuple[str, int]:
    if line.startswith('""', i):  # """ starts a multi-line string
        raise _NotLean
    parts: list[str] = []
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == '"':
            return "".join(parts), i + 1
        if ch == "\\":
            if i + 1 >= n:
                raise _NotLean
            esc = line[i + 1]
            if esc in _ESCAPES:
                parts.append(_ESCAPES[esc])
                i += 2
                continue
            width = 4 if esc == "u" else 8 if esc == "U" else 0
            digits = line[i + 2 : i + 2 + width]
            if not width or len(digits) != width or not all(c in _HEX for c in digits):
                raise _NotLean
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise _NotLean
            parts.append(chr(code))
            i += 2 + width
            continue
        if _bad_char(ch):
            raise _NotLean
        parts.append(ch)
        i += 1
    raise _NotLean  # unterminated
