"""criu-aio's log: lines that always land somewhere, one line per event, never forged.

Under runc, ``criu swrk`` gets the container's stdin/stdout/stderr on restore:
a byte from us there would land in the workload's output. So the swrk path
never writes to fds 0-2. Where lines go is the ``log`` setting
(``criu_aio_plugin.config``: ``$CRIU_AIO_LOG``, the config file's ``log``):

- ``auto`` (default): a datagram to /dev/log, as syslog(3) writes
  it (facility daemon, ident ``criu-aio``). Sent by hand rather than with the
  ``syslog`` module: syslog(3) drops messages silently when nobody listens at
  /dev/log (a container, a host without journald or rsyslog), while a failed
  ``connect``/``send`` here sends the line to the next target;
  ``syslog`` is the same, but a missing /dev/log is then worth a note;
- a file: ``/var/log/criu-aio/criu-aio.log``, or when that cannot be written
  (not root), ``/tmp/criu-aio-<uid>/criu-aio.log`` (a 0700 folder we own);
- ``/abs/path`` or ``file:/abs/path``: that file, else the two files above;
- ``stderr``: only where stderr is ours (the service, the CLI); in swrk, auto;
- ``none``: nothing (an explicit choice).

A target that fails is left for the next one, and the first line written there
says why, so a log never goes silent without a trace. Writing never raises:
a log is never worth a failed restore.

Every message is escaped before it reaches any target (``escape``): text from
a peer or the filesystem (an images-dir name, a kernel spec, a config value)
may hold newlines or other control characters, which would otherwise forge
lines (``...\\ncriu-aio[1] error: ...``) in a root service's log.

``log_level`` is debug, info (default), warning or error. This is a few lines
rather than the ``logging`` package, which is not lean (re, traceback,
threading, string; docs/architecture.md). Lean core.
"""

from __future__ import annotations

import _socket
import errno
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}
# syslog(3) priorities: LOG_DAEMON (3 << 3) | LOG_DEBUG/LOG_INFO/LOG_WARNING/LOG_ERR
_SYSLOG_PRI = {DEBUG: 24 | 7, INFO: 24 | 6, WARNING: 24 | 4, ERROR: 24 | 3}

SYSLOG_SOCKET = "/dev/log"
DEFAULT_FILE = "/var/log/criu-aio/criu-aio.log"
MAX_MESSAGE = 8192  # characters kept of one message (a peer can send 64 KiB of path)


def escape(text: str) -> str:
    """*text* on one line: control and other unprintable characters as \\xNN, \\uNNNN.

    Backslashes are kept as they are (so ``repr`` output is not doubled); an
    escaped newline cannot end a line, which is what forging needs.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
            continue
        code = ord(ch)
        out.append(
            f"\\x{code:02x}"
            if code < 0x100
            else f"\\u{code:04x}"
            if code < 0x10000
            else f"\\U{code:08x}"
        )
    return "".join(out)


def clip(message: str) -> str:
    """*message* escaped and cut to MAX_MESSAGE characters."""
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... [{len(message) - MAX_MESSAGE} more characters]"
    return escape(message)


def _fallback_file() -> str:
    return f"/tmp/criu-aio-{os.getuid()}/criu-aio.log"


def _open_append(path: str) -> int:
    """An O_APPEND descriptor of *path* (mode 0600), never through a symlink, never blocking."""
    folder = os.path.dirname(path)
    if path == _fallback_file():
        _private_folder(folder)
    elif path == DEFAULT_FILE and not os.path.isdir(folder):
        os.mkdir(folder, 0o700)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        if (os.fstat(fd).st_mode & 0o170000) != 0o100000:  # S_ISREG
            raise OSError(21, "not a regular file", path)
    except OSError:
        os.close(fd)
        raise
    return fd


def _private_folder(folder: str) -> None:
    """Create *folder* 0700, or accept it only when it is ours, 0700 and not a symlink."""
    try:  # noqa: SIM105 - contextlib is not lean (about 1 ms to import)
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(1, "not a private folder of ours", folder)


class Log:
    """A line logger with one target and fallbacks; cheap when nothing is logged."""

    def __init__(
        self, target: str | None = None, *, stdio_allowed: bool, level: str | None = None
    ) -> None:
        if target is None or level is None:
            from criu_aio_plugin import config

            settings = config.current()
            target = settings.log if target is None else target
            level = settings.log_level if level is None else level
        spec = target.strip()
        self.level = _LEVELS.get(level.strip().lower(), INFO)
        self._fd = -1
        self._sock: _socket.socket | None = None
        self._note = ""  # why an earlier target was left, said once in the next one
        self.path = ""
        # auto: syslog if there is one (no /dev/log is no failure, no note)
        self._auto = spec in ("", "auto")
        if spec in ("", "auto", "syslog"):
            self.kind = "syslog"
        elif spec == "none":
            self.kind = "none"
        elif spec == "stderr":
            self.kind = "stderr" if stdio_allowed else "syslog"
        else:
            self.kind, self.path = "file", spec.removeprefix("file:")

    def where(self) -> str:
        """Where lines go now (for messages that point the user at this log)."""
        if self.kind == "syslog":
            return f"syslog ({SYSLOG_SOCKET}, ident criu-aio)"
        if self.kind == "file":
            return self.path
        return self.kind

    # --- writing --------------------------------------------------------------------

    def log(self, level: int, message: str) -> None:
        """Write *message* (escaped, one line); failures move to the next target."""
        if level < self.level or self.kind == "none":
            return
        text = clip(message)
        for _ in range(4):  # syslog -> default file -> private file: at most this many moves
            try:
                self._write(level, text)
                return
            except OSError as err:
                if not self._fall_back(err):
                    return

    def _write(self, level: int, text: str) -> None:
        if self.kind == "syslog":
            self._send_syslog(level, text)
        elif self.kind == "stderr":
            sys.stderr.write(self._line(level, text))
            sys.stderr.flush()
        else:
            if self._fd < 0:
                self._fd = _open_append(self.path)
            if self._note:
                note, self._note = self._note, ""
                os.write(self._fd, self._line(WARNING, note).encode("utf-8", "replace"))
            os.write(self._fd, self._line(level, text).encode("utf-8", "replace"))

    def _send_syslog(self, level: int, text: str) -> None:
        sock = self._sock
        if sock is None:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)  # a stuck syslog daemon must not stall a restore
                sock.connect(SYSLOG_SOCKET)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        if self._note:
            note, self._note = self._note, ""
            sock.send(self._syslog_datagram(WARNING, note))
        sock.send(self._syslog_datagram(level, text))

    def _syslog_datagram(self, level: int, text: str) -> bytes:
        # The format syslog(3) sends: <PRI>Mmm dd hh:mm:ss ident[pid]: message
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime())
        head = f"<{_SYSLOG_PRI[level]}>{stamp} criu-aio[{os.getpid()}]: "
        return (head + text).encode("utf-8", "replace")

    def _fall_back(self, err: OSError) -> bool:
        """Leave the failed target for the next one; False when there is none left."""
        why = f"{self.where()}: {err.strerror or err}"
        self._close_target()
        no_syslog_here = self.kind == "syslog" and self._auto and err.errno == errno.ENOENT
        if self.kind in ("syslog", "stderr"):
            self.kind, self.path = "file", DEFAULT_FILE
            if no_syslog_here:
                return True  # auto's documented second choice: nothing to explain
        elif self.kind == "file" and self.path != _fallback_file():
            self.kind = "file"
            self.path = DEFAULT_FILE if self.path != DEFAULT_FILE else _fallback_file()
        else:
            self.kind = "none"
            return False
        self._note = f"log target {why}; logging here instead"
        return True

    def _line(self, level: int, text: str) -> str:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        millis = int((now % 1) * 1000)
        return f"{stamp}.{millis:03d}Z criu-aio[{os.getpid()}] {_NAMES[level]}: {text}\n"

    def debug(self, message: str) -> None:
        self.log(DEBUG, message)

    def info(self, message: str) -> None:
        self.log(INFO, message)

    def warning(self, message: str) -> None:
        self.log(WARNING, message)

    def error(self, message: str) -> None:
        self.log(ERROR, message)

    def _close_target(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        sock = self._sock
        self._sock = None
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Release the log's descriptors (called before exec; all are O_CLOEXEC anyway)."""
        self._close_target()


# --- the log file CRIU would have written ----------------------------------------------

_STARTED = time.monotonic()
_CRIU_LOG_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | os.O_APPEND
    | os.O_NOFOLLOW
    | os.O_NONBLOCK
    | os.O_NOCTTY
    | os.O_CLOEXEC
)


def criu_log_text(lines: Sequence[str]) -> str:
    """*lines* as CRIU's log lines: ``(SS.UUUUUU) Error (criu-aio): text``, escaped."""
    elapsed = time.monotonic() - _STARTED
    stamp = f"({int(elapsed):02d}.{int(elapsed % 1 * 1e6):06d})"
    return "".join(f"{stamp} Error (criu-aio): {clip(line)}\n" for line in lines)


def write_criu_log(directory: str, name: str, lines: Sequence[str]) -> str:
    """Write *lines* into *directory*/*name* as CRIU creates its log there; return the path.

    The way CRIU's log_init opens it (O_CREAT|O_TRUNC|O_APPEND, mode 0600), with
    the caller's rights (the service calls this acting as its peer), except
    that the file itself is never a symlink followed (O_NOFOLLOW), never a FIFO
    waited on (O_NONBLOCK) and only ever a regular file. Raises OSError.
    """
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(name, _CRIU_LOG_FLAGS, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        if (os.fstat(fd).st_mode & 0o170000) != 0o100000:
            raise OSError(21, "not a regular file", name)
        os.write(fd, criu_log_text(lines).encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return os.path.join(directory, name)
