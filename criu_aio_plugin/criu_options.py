"""CRIU's command line and configuration files, read exactly as CRIU 4.x reads them.

criu-aio stands in front of ``criu restore``/``criu check`` (installed as
``criu``, or ``criu-aio restore``) and must find what CRIU will find: the
command word, the images directory (-D), the work directory (-W) and the log
file (-o). A guess goes wrong in the cases issue 12 lists: ``criu
--manage-cgroups restore`` (an *optional* value, attached only with ``=``) or
``criu --file-validation filesize restore`` (a required value the guess did
not know).

Facts, from CRIU v4.1.1 (criu/config.c ``parse_options``, ``pre_parse``,
``next_config``, ``parse_statement``; criu/crtools.c ``main``), restated here:

- ``getopt_long`` with the short options ``dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:`` and
  the long options of ``_LONG`` (``BOOL_OPT(name)`` is ``name`` and
  ``no-name``, both no-argument). glibc's rules: options and operands may mix
  (the operands are permuted behind the options) unless $POSIXLY_CORRECT is
  set (then the first operand ends the options); ``--`` ends the options; a
  long option may be abbreviated to a prefix that matches one option, or
  several that share argument kind, flag and value; a required value is the
  rest of the word (``-Dx``, ``--images-dir=x``) or the next word; an
  optional one only the rest of the word (``-v4``, ``--manage-cgroups=full``).
- The command is the first operand; more operands are an error except after
  ``--exec-cmd`` (restore) and for ``cpuinfo``.
- Before getopt, any word that is exactly ``-h`` or ``--help`` means usage;
  ``--config F``/``--config=F`` (found by exact word, or ``--config=`` anywhere
  in a word) names a config file and, like ``--no-default-config``, skips
  the default ones.
- Options are taken, in this order, from /etc/criu/default.conf,
  $HOME/.criu/default.conf (both unless skipped), $CRIU_CONFIG_FILE, the
  ``--config`` file, then argv: a later value wins. A config file holds one
  option per line (``images-dir /x``, no dashes; ``#`` comments; a value may
  be in double quotes); each line becomes ``--images-dir`` ``/x`` for getopt.
- ``-D`` defaults to ``.``, ``-W`` to the images directory; ``-o`` names the
  log file, relative to the work directory (CRIU chdirs there first); no
  ``-o``, or ``-o -``, logs to stderr.

Lean core (the ``criu`` launcher's ``swrk`` path finds its command word here):
no re, no dataclasses.
"""

from __future__ import annotations

import os

from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

SHORT_OPTS = "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:"
NO_ARG, REQUIRED, OPTIONAL = 0, 1, 2

GLOBAL_CONFIG = "/etc/criu/default.conf"
USER_CONFIG = ".criu/default.conf"  # under $HOME
ENV_CONFIG = "CRIU_CONFIG_FILE"


def _bool(name: str, field: str) -> tuple[tuple[str, int, str], ...]:
    """CRIU's BOOL_OPT(name, &opts.field): ``--name`` sets it, ``--no-name`` clears it."""
    return ((name, NO_ARG, f"&{field}=1"), (f"no-{name}", NO_ARG, f"&{field}=0"))


# CRIU v4.1.1 criu/config.c, parse_options(): long_opts, in table order, as
# (name, argument, identity). The identity is what getopt compares when a prefix
# matches several options (flag and val): the short letter or number an option
# returns, or "&field=value" for one that stores into opts.field.
_LONG: tuple[tuple[str, int, str], ...] = (
    ("tree", REQUIRED, "t"),
    ("leave-stopped", NO_ARG, "s"),
    ("leave-running", NO_ARG, "R"),
    *_bool("restore-detached", "restore_detach"),
    *_bool("restore-sibling", "restore_sibling"),
    *_bool("daemon", "restore_detach"),
    ("images-dir", REQUIRED, "D"),
    ("work-dir", REQUIRED, "W"),
    ("log-file", REQUIRED, "o"),
    ("join-ns", REQUIRED, "J"),
    ("root", REQUIRED, "r"),
    ("ext-unix-sk", OPTIONAL, "x"),
    ("help", NO_ARG, "h"),
    *_bool("tcp-established", "tcp_established_ok"),
    ("close", REQUIRED, "1043"),
    *_bool("log-pid", "log_file_per_pid"),
    ("version", NO_ARG, "V"),
    *_bool("evasive-devices", "evasive_devices"),
    ("pidfile", REQUIRED, "1046"),
    ("veth-pair", REQUIRED, "1047"),
    ("action-script", REQUIRED, "1049"),
    *_bool("link-remap", "link_remap_ok"),
    *_bool("shell-job", "shell_job"),
    *_bool("file-locks", "handle_file_locks"),
    *_bool("page-server", "use_page_server"),
    ("address", REQUIRED, "1051"),
    ("port", REQUIRED, "1052"),
    ("prev-images-dir", REQUIRED, "1053"),
    ("ms", NO_ARG, "1054"),
    *_bool("track-mem", "track_mem"),
    *_bool("auto-dedup", "auto_dedup"),
    ("libdir", REQUIRED, "L"),
    ("cpu-cap", OPTIONAL, "1057"),
    *_bool("force-irmap", "force_irmap"),
    ("ext-mount-map", REQUIRED, "M"),
    ("exec-cmd", NO_ARG, "1059"),
    ("manage-cgroups", OPTIONAL, "1060"),
    ("cgroup-root", REQUIRED, "1061"),
    ("inherit-fd", REQUIRED, "1062"),
    ("feature", REQUIRED, "1063"),
    ("skip-mnt", REQUIRED, "1064"),
    ("enable-fs", REQUIRED, "1065"),
    ("enable-external-sharing", NO_ARG, "&enable_external_sharing=1"),
    ("enable-external-masters", NO_ARG, "&enable_external_masters=1"),
    ("freeze-cgroup", REQUIRED, "1068"),
    ("ghost-limit", REQUIRED, "1069"),
    ("irmap-scan-path", REQUIRED, "1070"),
    ("lsm-profile", REQUIRED, "1071"),
    ("timeout", REQUIRED, "1072"),
    ("external", REQUIRED, "1073"),
    ("empty-ns", REQUIRED, "1074"),
    ("lazy-pages", NO_ARG, "1076"),
    *_bool("extra", "check_extra_features"),
    *_bool("experimental", "check_experimental_features"),
    ("all", NO_ARG, "1079"),
    ("cgroup-props", REQUIRED, "1080"),
    ("cgroup-props-file", REQUIRED, "1081"),
    ("cgroup-dump-controller", REQUIRED, "1082"),
    *_bool("skip-in-flight", "tcp_skip_in_flight"),
    *_bool("deprecated", "deprecated_ok"),
    *_bool("display-stats", "display_stats"),
    *_bool("weak-sysctls", "weak_sysctls"),
    ("status-fd", REQUIRED, "1088"),
    *_bool("tcp-close", "tcp_close"),
    ("verbosity", OPTIONAL, "v"),
    ("ps-socket", REQUIRED, "1091"),
    *_bool("stream", "stream"),
    ("config", REQUIRED, "1089"),
    ("no-default-config", NO_ARG, "1090"),
    ("tls-cacert", REQUIRED, "1092"),
    ("tls-cacrl", REQUIRED, "1093"),
    ("tls-cert", REQUIRED, "1094"),
    ("tls-key", REQUIRED, "1095"),
    *_bool("tls", "tls"),
    ("tls-no-cn-verify", NO_ARG, "&tls_no_cn_verify=1"),
    ("cgroup-yard", REQUIRED, "1096"),
    ("pre-dump-mode", REQUIRED, "1097"),
    ("file-validation", REQUIRED, "1098"),
    *_bool("skip-file-rwx-check", "skip_file_rwx_check"),
    ("lsm-mount-context", REQUIRED, "1099"),
    ("network-lock", REQUIRED, "1100"),
    *_bool("mntns-compat-mode", "mntns_compat_mode"),
    *_bool("unprivileged", "unprivileged"),
    *_bool("ghost-fiemap", "ghost_fiemap"),
)

LONG_OPTIONS: dict[str, tuple[int, str]] = {name: (arg, ident) for name, arg, ident in _LONG}


def _short_table(spec: str) -> dict[str, int]:
    table: dict[str, int] = {}
    i = 0
    while i < len(spec):
        letter = spec[i]
        colons = 0
        while i + 1 + colons < len(spec) and spec[i + 1 + colons] == ":":
            colons += 1
        table[letter] = REQUIRED if colons == 1 else OPTIONAL if colons == 2 else NO_ARG
        i += 1 + colons
    return table


SHORT_OPTIONS = _short_table(SHORT_OPTS)

# identities (see _LONG) of the options criu-aio reads the values of
IMAGES_DIR, WORK_DIR, LOG_FILE, HELP, VERSION, EXEC_CMD = "D", "W", "o", "h", "V", "1059"


class Scan(Value):
    """One getopt_long pass over a word list (without argv[0]).

    ``options``: (identity, value or None) in the order getopt returns them;
    ``operands``: the non-option words as CRIU sees them after permutation, with
    their indexes in the words; ``error``: getopt's complaint ("" when none),
    after which CRIU stops (usage, exit 1).
    """

    options: tuple[tuple[str, str | None], ...]
    operands: tuple[tuple[int, str], ...]
    error: str = ""

    def last(self, ident: str) -> str | None:
        """The value of the last occurrence of option *ident*, or None."""
        found = None
        for option, value in self.options:
            if option == ident:
                found = value
        return found

    def has(self, ident: str) -> bool:
        return any(option == ident for option, _ in self.options)


def _long_match(name: str) -> tuple[str, int, str] | str:
    """(name, argument, identity) of the long option *name* abbreviates, or an error."""
    exact = LONG_OPTIONS.get(name)
    if exact is not None:
        return (name, *exact)
    found: tuple[str, int, str] | None = None
    ambiguous: list[str] = []
    for option, arg, ident in _LONG:
        if not option.startswith(name):
            continue
        if found is None:
            found = (option, arg, ident)
        elif (arg, ident) != found[1:]:
            ambiguous.append(option)
    if found is None:
        return f"unrecognized option '--{name}'"
    if ambiguous:
        return f"option '--{name}' is ambiguous; possibilities: --{found[0]} --" + " --".join(
            ambiguous
        )
    return found


def getopt(words: Sequence[str], *, posixly_correct: bool = False) -> Scan:
    """glibc getopt_long over *words* with CRIU's tables (see the module docstring)."""
    options: list[tuple[str, str | None]] = []
    before: list[tuple[int, str]] = []  # operands met among the options
    after: list[tuple[int, str]] = []  # operands after "--" (or after the first, in order)
    i, n = 0, len(words)
    while i < n:
        word = words[i]
        if word == "--":
            after = [(j, words[j]) for j in range(i + 1, n)]
            break
        if not word.startswith("-") or word == "-":
            if posixly_correct:
                after = [(j, words[j]) for j in range(i, n)]
                break
            before.append((i, word))
            i += 1
            continue
        i += 1
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            match = _long_match(name)
            if isinstance(match, str):
                return Scan(tuple(options), tuple(before), match)
            long_name, arg, ident = match
            if eq:
                if arg == NO_ARG:
                    error = f"option '--{long_name}' doesn't allow an argument"
                    return Scan(tuple(options), tuple(before), error)
                options.append((ident, value))
            elif arg == REQUIRED:
                if i >= n:
                    error = f"option '--{long_name}' requires an argument"
                    return Scan(tuple(options), tuple(before), error)
                options.append((ident, words[i]))
                i += 1
            else:
                options.append((ident, None))
            continue
        at = 1
        while at < len(word):
            letter = word[at]
            kind = SHORT_OPTIONS.get(letter) if letter != ":" else None
            if kind is None:
                return Scan(tuple(options), tuple(before), f"invalid option -- '{letter}'")
            rest = word[at + 1 :]
            if kind == NO_ARG:
                options.append((letter, None))
                at += 1
                continue
            if rest:
                options.append((letter, rest))
            elif kind == REQUIRED:
                if i >= n:
                    error = f"option requires an argument -- '{letter}'"
                    return Scan(tuple(options), tuple(before), error)
                options.append((letter, words[i]))
                i += 1
            else:
                options.append((letter, None))
            break
    return Scan(tuple(options), tuple(before + after))


# --- configuration files ---------------------------------------------------------------


def config_words(text: str) -> list[str] | None:
    """A CRIU config file as the words getopt gets (parse_statement), or None when CRIU
    refuses it ("Unsupported configuration file format", exit 1).

    Each line ``name value`` becomes ``--name value``; ``name`` alone ``--name``.
    """
    words: list[str] = []
    lines = text.split("\n")
    last = len(lines) - 1
    for index, body in enumerate(lines):
        if index == last and not body:
            break  # the text ended with a newline: no further line
        got = _statement(body, ended=index < last)
        if got is None:
            return None
        words += got
    return words


def _isspace(ch: str) -> bool:
    return ch in " \t\n\v\f\r"


def _statement(line: str, *, ended: bool) -> list[str] | None:
    """One line (without its newline; *ended*: it had one) as getopt words, or None."""
    offset = 0
    while offset < len(line) and _isspace(line[offset]):
        offset += 1
    if offset < len(line) and line[offset] == "#":
        return []
    if offset == len(line) and ended:  # blank: C meets the '\n' here and skips the line
        return []
    text = line[offset:]
    cut = text.find(" ")
    if cut < 0:
        cut = text.find("\t")
    if cut < 0:
        return [f"--{text}"]
    key = f"--{text[:cut]}"
    pos = cut + 1
    while pos < len(text) and _isspace(text[pos]):
        pos += 1
    if pos < len(text) and text[pos] == "#":
        return [key]
    if pos < len(text) and text[pos] == '"':
        value = _quoted(text, pos + 1)
        return None if value is None else [key, value]
    value = text[pos:]
    space = value.find(" ")
    start = space if space >= 0 else 0
    if '\\"' in value:  # escaped quotes lose their backslash; C moves its offset too
        start += value.count('\\"') + 1
        value = value.replace('\\"', '"')
    hash_at = value.find("#")
    if hash_at >= 0:
        value = value[:hash_at]
    tail = value[start:]
    if " " in tail and not all(_isspace(c) for c in tail[:-1]):
        return None
    space = value.find(" ", start)
    if space >= 0:
        value = value[:space]
    return [key, value]


def _quoted(text: str, start: int) -> str | None:
    """The value of a double-quoted config value starting after the quote, or None."""
    if start >= len(text):
        return None  # a lone quote
    if text[start] == '"':
        return ""
    search = start + 1
    while True:
        end = text.find('"', search)
        if end < 0:
            return None
        if text[end - 1] != "\\":
            break
        search = end + 1
    after = text[end + 1 :]
    if " " in after:
        for ch in after[:-1]:
            if ch == "#":
                break
            if not _isspace(ch):
                return None
    value = text[start:end].replace('\\"', '"')
    hash_at = value.find("#")
    return value if hash_at < 0 else value[:hash_at]


# --- a whole command line ---------------------------------------------------------------


class CommandLine(Value):
    """What CRIU takes from ``criu ARGS`` plus its config files (see module docstring).

    ``command`` is None when CRIU would not run a command at all: ``error``
    says why (a getopt or config file error, usage, --help, --version, no
    command, excess operands). The ``*_opt`` fields are the -D/-W/-o values
    given (None: not given); ``options`` are argv's own options.
    """

    command: str | None
    index: int
    images_dir_opt: str | None = None
    work_dir_opt: str | None = None
    log_file_opt: str | None = None
    options: tuple[tuple[str, str | None], ...] = ()
    error: str = ""
    config_files: tuple[str, ...] = ()

    @property
    def images_dir(self) -> str:
        return self.images_dir_opt or "."

    @property
    def work_dir(self) -> str:
        """CRIU's working directory (-W, else the images directory)."""
        return self.work_dir_opt or self.images_dir

    @property
    def log_file(self) -> str | None:
        """The log file (relative to ``work_dir``), or None: CRIU logs to stderr."""
        return None if self.log_file_opt in (None, "-") else self.log_file_opt

    def log_path(self) -> str | None:
        """Where CRIU writes its log: ``log_file`` relative to ``work_dir``, or None."""
        name = self.log_file
        return None if name is None else os.path.join(self.work_dir, name)

    def has(self, ident: str, value: str | None = None) -> bool:
        """Whether argv holds option *ident* (with *value*, when given)."""
        return any(o == ident and (value is None or v == value) for o, v in self.options)


def read_config_text(path: str) -> str | None:
    """A config file's text as CRIU's fopen would get it (None when it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if (os.fstat(fd).st_mode & 0o170000) != 0o100000:
            return None  # a FIFO or a device: never worth blocking a restore
        data = os.read(fd, 1 << 20)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")


def config_sources(
    args: Sequence[str], environ: Mapping[str, str] | None = None
) -> tuple[list[str], str | None]:
    """The config files CRIU reads for *args*, in order, and a usage reason (-h) or None."""
    env = os.environ if environ is None else environ
    skip_defaults = False
    cmdline_file: str | None = None
    for i, word in enumerate(args):  # pre_parse: exact words, before getopt
        if word in ("--help", "-h"):
            return [], "help requested"
        if word == "--no-default-config":
            skip_defaults = True
        elif word == "--config":
            cmdline_file = args[i + 1] if i + 1 < len(args) else None
            skip_defaults = True
        elif "--config=" in word:
            cmdline_file = word[len("--config=") :]  # CRIU skips 9 bytes from the word's start
            skip_defaults = True
    files: list[str] = []
    if not skip_defaults:
        files.append(GLOBAL_CONFIG)
        home = env.get("HOME")
        if home:
            files.append(f"{home}/{USER_CONFIG}")
    if env.get(ENV_CONFIG):
        files.append(env[ENV_CONFIG])
    if cmdline_file:
        files.append(cmdline_file)
    return files, None


def scan_config_files(
    paths: Sequence[str],
    read: Callable[[str], str | None] = read_config_text,
    *,
    posixly_correct: bool = False,
) -> tuple[dict[str, str | None], tuple[str, ...], str]:
    """(-D/-W/-o values the files set, the files read, CRIU's complaint or "").

    Files CRIU cannot open are skipped, as CRIU skips them.
    """
    values: dict[str, str | None] = {}
    done: list[str] = []
    for path in paths:
        text = read(path)
        if text is None:
            continue
        done.append(path)
        words = config_words(text)
        if words is None:
            return values, tuple(done), f"CRIU refuses the format of config file {path}"
        scan = getopt(words, posixly_correct=posixly_correct)
        for ident, value in scan.options:
            if ident in (HELP, VERSION):
                return values, tuple(done), f"config file {path}: --help/--version"
            if ident in (IMAGES_DIR, WORK_DIR, LOG_FILE):
                values[ident] = value
        if scan.error:
            return values, tuple(done), f"config file {path}: {scan.error}"
    return values, tuple(done), ""


def parse_command_line(
    args: Sequence[str],
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str | None] = read_config_text,
) -> CommandLine:
    """``criu ARGS`` (without argv[0]) as CRIU reads it, config files included."""
    env = os.environ if environ is None else environ
    posix = "POSIXLY_CORRECT" in env
    files, usage = config_sources(args, env)
    if usage:
        return CommandLine(None, -1, error=usage)
    values, done, error = scan_config_files(files, read, posixly_correct=posix)
    if error:
        return CommandLine(None, -1, error=error, config_files=done)
    scan = getopt(args, posixly_correct=posix)
    for ident, value in scan.options:
        if ident in (HELP, VERSION):
            error = "--help or --version: CRIU only prints"
            break
        if ident in (IMAGES_DIR, WORK_DIR, LOG_FILE):
            values[ident] = value
    error = error or scan.error
    if not error and not scan.operands:
        error = "no command"
    if not error and len(scan.operands) > 1:
        command = scan.operands[0][1]
        if command != "cpuinfo" and not any(o == EXEC_CMD for o, _ in scan.options):
            error = f"excessive parameters for command {command}"
    index, command_name = scan.operands[0] if scan.operands and not error else (-1, None)
    return CommandLine(
        command=command_name,
        index=index,
        images_dir_opt=values.get(IMAGES_DIR),
        work_dir_opt=values.get(WORK_DIR),
        log_file_opt=values.get(LOG_FILE),
        options=scan.options,
        error=error,
        config_files=done,
    )


def command_word(args: Sequence[str]) -> tuple[int, str | None]:
    """(index, command) of ``criu ARGS`` from argv alone (no config file is read).

    For dispatch on the launcher's hand-over path: (-1, None) when CRIU would
    run no command (usage, --help, --version, a getopt error, no operand).
    """
    if "-h" in args or "--help" in args:
        return -1, None
    scan = getopt(args, posixly_correct="POSIXLY_CORRECT" in os.environ)
    if scan.error or not scan.operands or scan.has(VERSION) or scan.has(HELP):
        return -1, None
    return scan.operands[0]
