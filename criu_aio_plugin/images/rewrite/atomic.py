"""File I/O of a transaction: temp files written whole and durable, digests.

A new version of a file is written to a temp file in the same directory, with
the original's mode and owner, and fsynced, before anything is renamed over
the original (python-atomicwrites' recipe).
"""

from __future__ import annotations

import os

from criu_aio_plugin.errors import ImageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from hashlib import sha256 as _builtin_sha256
else:
    try:
        # hashlib's sha256 comes from OpenSSL, whose loading costs ~2 ms on a
        # restore's critical path; the built-in module gives the same digest,
        # ~5x slower (2.7 ms per MB here): hashlib takes over past _BUILTIN_HASH_BUDGET.
        from _sha256 import sha256 as _builtin_sha256
    except ImportError:  # Python builds without it (3.12+ names it _sha2)
        from hashlib import sha256 as _builtin_sha256

_BUILTIN_HASH_BUDGET = 1 << 20
_builtin_hashed = 0


def sha256(data: bytes) -> str:
    """The hex SHA-256 of *data* (the journal's identity of a file's contents)."""
    global _builtin_hashed
    if _builtin_hashed < _BUILTIN_HASH_BUDGET:
        _builtin_hashed += len(data)
        return _builtin_sha256(data).hexdigest()
    import hashlib

    return hashlib.sha256(data).hexdigest()


def create_temp(dir_fd: int, tmp: str, shown: str, folder: str) -> int:
    """A new file ``tmp`` in the directory (0600, O_EXCL, never through a symlink).

    Its descriptor; an ``ImageError`` naming *shown* (the file the temp stands
    for) and saying that *folder* must be writable when it cannot be made.
    """
    try:
        return os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as err:
        raise ImageError(
            f"cannot create a temporary file beside it: {err.strerror}",
            path=shown,
            errno=err.errno,
            hint=f"{folder} must be writable",
        ) from err


def write_temp(
    dir_fd: int,
    shown: str,
    name: str,
    tmp: str,
    data: bytes,
    like: os.stat_result | None,
    sync: bool = True,
) -> None:
    """Write ``data`` to the new file ``tmp``, with ``like``'s mode and owner, fsynced.

    ``sync=False`` leaves the fsync to the caller (``transaction`` makes many
    temps durable with one syncfs). On failure the temp file is removed and
    ``ImageError`` (errno kept) names the image the temp stood for.
    """
    path = os.path.join(shown, name)
    fd = create_temp(dir_fd, tmp, path, "the images directory")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if like is not None:
            os.fchmod(fd, like.st_mode & 0o7777)
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
                os.fchown(fd, like.st_uid, like.st_gid)
                # chown clears set-id bits; put them back.
                os.fchmod(fd, like.st_mode & 0o7777)
        if sync:
            os.fsync(fd)
    except OSError as err:
        os.close(fd)
        unlink_quietly(dir_fd, tmp)
        raise ImageError(
            f"cannot write the new version: {err.strerror}", path=path, errno=err.errno
        ) from err
    os.close(fd)


def unlink_quietly(dir_fd: int, name: str) -> None:
    # Cleanup after a failure must not mask the first error.
    try:  # noqa: SIM105 - contextlib stays off the restore path
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def fsync_dir(dir_fd: int, shown: str) -> None:
    try:
        os.fsync(dir_fd)
    except OSError as err:
        raise ImageError(
            f"cannot fsync the directory: {err.strerror}", path=shown, errno=err.errno
        ) from err


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats show the same, unchanged file."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


def journal_writer(
    dir_fd: int, shown: str
) -> Callable[[str, str, bytes, os.stat_result | None], None]:
    """The ``write`` that ``journal.store`` takes: a fresh temp, written by ``write_temp``."""

    def write(name: str, tmp: str, data: bytes, like: os.stat_result | None) -> None:
        unlink_quietly(dir_fd, tmp)
        write_temp(dir_fd, shown, name, tmp, data, like)

    return write
