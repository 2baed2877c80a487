"""The sidecar journal of a fixed archive: ``ARCHIVE.criu-aio.journal`` beside it.

Why beside the archive and not inside it: an extra member would be a change
to the archive itself (its member list, its digest), and the runtimes that
import it would carry it along: ``podman container restore --import``
extracts every member into the container's directory, the kubelet's
checkpoint images ship it to a registry. A sidecar keeps the archive exactly
what the engine wrote but for the rewritten mm images, and a runtime never
sees it. What it costs: an archive copied without its sidecar can no longer
be reverted (``fix --output`` leaves the source untouched, which is the
simplest undo of all).

It holds what the directory journal holds (``images.journal``): per mm image
criu-aio changed, the SHA-256 of its bytes as CRIU wrote them, the exact
``aios`` submessages before the first change (so ``--revert`` restores them
byte for byte) and the SHA-256 of what criu-aio last wrote; the history of
transactions; and ``pending`` while a transaction replaces the archive.

A transaction is one rename (the fixed archive's temp file over the archive),
but the journal must change with it, so (like the directory rewrite):
the temp archive is written and fsynced; the journal is stored with
``pending`` naming the temp file, the archive's identity before (device,
inode, size, mtime) and the temp's identity, and the journal as it was before
(``before``); the temp is renamed over the archive and the directory fsynced;
the journal is stored without ``pending``. A run that finds ``pending``
(``transaction.recover``) looks at which file the archive path holds now:
the new one (finish), the old one with the temp still whole (rename it:
roll forward) or the old one without it (roll back to ``before``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images.journal import FileOriginal, originals_from_json, originals_to_json

SUFFIX = ".criu-aio.journal"
FORMAT = "criu-aio-archive-journal"
VERSION = 1
_MAX_SIZE = 64 << 20


def journal_name(archive: str) -> str:
    """The sidecar's file name for the archive file name ``archive``."""
    return archive + SUFFIX


def temp_name(archive: str) -> str:
    """The temp file a rewrite of ``archive`` writes first (hidden, same directory)."""
    return f".{archive}.criu-aio-tmp"


@dataclass(frozen=True)
class FileId:
    """Which file a name held: enough to tell the old archive from the new one."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def to_json(self) -> dict[str, int]:
        return {"dev": self.dev, "ino": self.ino, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_json(cls, obj: Any) -> FileId:
        return cls(*(_int(obj, k) for k in ("dev", "ino", "size", "mtime_ns")))


@dataclass(frozen=True)
class Pending:
    txid: str
    action: str
    tmp: str
    old: FileId | None  # None: the archive did not exist (fix --output NEW)
    new: FileId
    before: dict[str, Any] | None  # the journal document before; None: there was none


@dataclass
class ArchiveJournal:
    archive: str
    compression: str = ""
    images_prefix: str = ""
    originals: dict[str, FileOriginal] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    pending: Pending | None = None

    def to_json(self) -> dict[str, Any]:
        pending = None
        if self.pending is not None:
            p = self.pending
            pending = {
                "txid": p.txid,
                "action": p.action,
                "tmp": p.tmp,
                "old": p.old.to_json() if p.old else None,
                "new": p.new.to_json(),
                "before": p.before,
            }
        return {
            "format": FORMAT,
            "version": VERSION,
            "archive": self.archive,
            "compression": self.compression,
            "images_prefix": self.images_prefix,
            "originals": originals_to_json(self.originals),
            "history": self.history,
            "pending": pending,
        }


class _Bad(ValueError):
    pass


def _get(obj: Any, key: str, kind: type) -> Any:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        raise _Bad(f"{key}: expected {kind.__name__}")
    return obj[key]


def _int(obj: Any, key: str) -> int:
    value = _get(obj, key, int)
    assert isinstance(value, int)
    return value


def from_json(obj: Any) -> ArchiveJournal:
    if _get(obj, "format", str) != FORMAT or _get(obj, "version", int) != VERSION:
        raise _Bad("not a criu-aio archive journal of a version this criu-aio reads")
    originals = originals_from_json(obj.get("originals"))
    pending = None
    raw = obj.get("pending")
    if raw is not None:
        tmp = _get(raw, "tmp", str)
        if "/" in tmp or not tmp.startswith("."):
            raise _Bad(f"pending temp file {tmp!r} is not a plain hidden name")
        old = raw.get("old")
        before = raw.get("before")
        if before is not None and not isinstance(before, dict):
            raise _Bad("before: expected an object")
        pending = Pending(
            _get(raw, "txid", str),
            _get(raw, "action", str),
            tmp,
            None if old is None else FileId.from_json(old),
            FileId.from_json(_get(raw, "new", dict)),
            before,
        )
    return ArchiveJournal(
        _get(obj, "archive", str),
        _get(obj, "compression", str),
        _get(obj, "images_prefix", str),
        originals,
        _get(obj, "history", list),
        pending,
    )


def load(dir_fd: int, shown_dir: str, archive: str) -> ArchiveJournal | None:
    """The sidecar journal of ``archive`` (a name in ``dir_fd``), or None."""
    name = journal_name(archive)
    path = os.path.join(shown_dir, name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ImageError(f"cannot open: {err.strerror}", path=path, errno=err.errno) from err
    try:
        data = os.read(fd, _MAX_SIZE + 1)
    except OSError as err:
        raise ImageError(f"cannot read: {err.strerror}", path=path, errno=err.errno) from err
    finally:
        os.close(fd)
    try:
        if len(data) > _MAX_SIZE:
            raise _Bad(f"more than {_MAX_SIZE} bytes")
        journal = from_json(json.loads(data))
    except (ValueError, TypeError, AttributeError) as err:
        raise ImageError(
            f"unreadable journal: {err}",
            path=path,
            hint="move it aside only if you know no criu-aio run on the archive was interrupted",
        ) from err
    if journal.archive != archive:
        raise ImageError(
            f"journal of {journal.archive!r}, not of {archive!r}",
            path=path,
            hint="it was renamed along with another archive; move it aside",
        )
    return journal


def store(dir_fd: int, shown_dir: str, journal: ArchiveJournal) -> None:
    """Replace the sidecar atomically: temp file, fsync, rename, fsync the directory."""
    name = journal_name(journal.archive)
    tmp = f".{name}.tmp"
    path = os.path.join(shown_dir, name)
    data = (json.dumps(journal.to_json(), sort_keys=True) + "\n").encode()
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as err:
        raise ImageError(
            f"cannot write the journal: {err.strerror}", path=path, errno=err.errno
        ) from err


def remove(dir_fd: int, shown_dir: str, archive: str) -> None:
    name = journal_name(archive)
    try:
        os.unlink(name, dir_fd=dir_fd)
        os.fsync(dir_fd)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ImageError(
            f"cannot remove the journal: {err.strerror}",
            path=os.path.join(shown_dir, name),
            errno=err.errno,
        ) from err


def pending(path: str | os.PathLike[str]) -> bool:
    """An interrupted fix or revert of the archive at ``path`` waits for the next run."""
    shown_dir, name = os.path.split(os.fspath(path))
    shown_dir = shown_dir or "."
    if os.path.lexists(os.path.join(shown_dir, temp_name(name))):
        return True
    if not os.path.lexists(os.path.join(shown_dir, journal_name(name))):
        return False
    dir_fd = os.open(shown_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        jr = load(dir_fd, shown_dir, name)
    finally:
        os.close(dir_fd)
    return jr is not None and jr.pending is not None
