"""Logging for the interposer: a file or syslog, never the client's stdio.

Under runc, ``criu swrk`` gets the container's stdin/stdout/stderr on restore:
a byte from us there would land in the workload's output. So the swrk path
never writes to fds 0-2; it logs to syslog (default) or a file, chosen by
``$CRIU_AIO_LOG``:

- unset or ``syslog``: syslog(3), facility daemon, ident ``criu-aio``;
- ``/abs/path`` or ``file:PATH``: appended lines, file mode 0600, O_CLOEXEC;
- ``none``: nothing;
- ``stderr``: only where stderr is ours (the service, the CLI wrap); in swrk it
  falls back to syslog.

``$CRIU_AIO_LOG_LEVEL`` is debug, info (default), warning or error. This is a
few lines rather than the ``logging`` package, which is not lean (re,
traceback, threading, string; docs/architecture.md).
"""

from __future__ import annotations

import os
import sys
import time

ENV_TARGET = "CRIU_AIO_LOG"
ENV_LEVEL = "CRIU_AIO_LOG_LEVEL"

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}
# syslog priorities (LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR)
_SYSLOG_PRIO = {DEBUG: 7, INFO: 6, WARNING: 4, ERROR: 3}


class Log:
    """A line logger with one target; cheap when nothing is logged."""

    def __init__(self, target: str | None = None, *, stdio_allowed: bool, level: str | None = None):
        spec = (target if target is not None else os.environ.get(ENV_TARGET, "")).strip()
        level_name = (level if level is not None else os.environ.get(ENV_LEVEL, "info")).lower()
        self.level = _LEVELS.get(level_name, INFO)
        self._fd = -1
        self._syslog_open = False
        if spec in ("", "syslog"):
            self.kind, self.path = "syslog", ""
        elif spec == "none":
            self.kind, self.path = "none", ""
        elif spec == "stderr":
            self.kind, self.path = ("stderr", "") if stdio_allowed else ("syslog", "")
        else:
            self.kind, self.path = "file", spec.removeprefix("file:")

    def _line(self, level: int, message: str) -> str:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        millis = int((now % 1) * 1000)
        return f"{stamp}.{millis:03d}Z criu-aio[{os.getpid()}] {_NAMES[level]}: {message}\n"

    def log(self, level: int, message: str) -> None:
        """Write *message*; a logging failure is swallowed (never worth a failed restore)."""
        if level < self.level or self.kind == "none":
            return
        try:
            if self.kind == "syslog":
                import syslog

                if not self._syslog_open:
                    syslog.openlog("criu-aio", syslog.LOG_PID, syslog.LOG_DAEMON)
                    self._syslog_open = True
                syslog.syslog(_SYSLOG_PRIO[level], message)
            elif self.kind == "stderr":
                sys.stderr.write(self._line(level, message))
                sys.stderr.flush()
            else:
                if self._fd < 0:
                    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                    self._fd = os.open(self.path, flags, 0o600)
                os.write(self._fd, self._line(level, message).encode("utf-8", "replace"))
        except OSError:
            pass

    def debug(self, message: str) -> None:
        self.log(DEBUG, message)

    def info(self, message: str) -> None:
        self.log(INFO, message)

    def warning(self, message: str) -> None:
        self.log(WARNING, message)

    def error(self, message: str) -> None:
        self.log(ERROR, message)

    def close(self) -> None:
        """Release the log's descriptor (called before exec; all are O_CLOEXEC anyway)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._syslog_open:
            import syslog

            syslog.closelog()
            self._syslog_open = False
