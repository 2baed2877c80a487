"""criu-aio's exceptions: one base, one type per party at fault.

Library code raises these (always ``raise ... from err`` when wrapping); only
``criu_aio_plugin.cli.main.main`` turns them into a message and an exit code.
"""

from __future__ import annotations

import errno as _errno


class CriuAioError(Exception):
    """Base of every error criu-aio raises on purpose.

    ``errno`` carries the OS-level cause when there is one (it is what an RPC
    refusal puts in ``criu_resp.cr_errno``); ``hint`` says what to do next.
    """

    default_errno = _errno.EINVAL

    def __init__(self, message: str, *, errno: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = self.default_errno if errno is None else errno
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ClientError(CriuAioError):
    """The caller (an RPC client or a command line) asked for something wrong."""


class KernelError(CriuAioError):
    """The kernel did something unexpected, or refused (errno kept)."""

    default_errno = _errno.EIO


class AioBudgetError(KernelError):
    """io_setup failed with EAGAIN: fs.aio-max-nr cannot hold another context."""

    default_errno = _errno.EAGAIN


class CriuError(CriuAioError):
    """The real CRIU is missing, unusable, or answered something unexpected."""

    default_errno = _errno.ENOENT


class ImageError(CriuAioError):
    """A checkpoint image is malformed, hostile, or cannot be read or written.

    ``path`` names the file and ``offset`` the byte where decoding stopped, or
    ``field`` the message field that is out of range.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        field: str | None = None,
        errno: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = []
        if path is not None:
            where.append(path)
        if offset is not None:
            where.append(f"offset {offset}")
        if field is not None:
            where.append(f"field {field}")
        full = f"{': '.join([', '.join(where), message]) if where else message}"
        super().__init__(full, errno=errno, hint=hint)
        self.path = path
        self.offset = offset
        self.field = field


class RestoreImpossible(CriuAioError):
    """No nr_req can reproduce a ring on this host (e.g. below the per-CPU floor)."""

    default_errno = _errno.ERANGE
