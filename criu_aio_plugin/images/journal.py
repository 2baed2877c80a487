"""The rewrite journal: what criu-aio changed in a checkpoint, and how to undo it.

One JSON file, ``criu-aio.journal``, in the images directory. It holds:

- ``originals``: per mm image criu-aio ever changed, the SHA-256 of the file as
  CRIU wrote it, the exact bytes of each ring's ``aios`` submessage before the
  first change (so ``--revert`` restores the file byte for byte), and the
  SHA-256 of what criu-aio last wrote (so a file replaced since, e.g. by a new
  dump, is recognised and not "reverted" into garbage).
- ``history``: one record per transaction (action, time, kernel, host facts,
  per ring old and new nr_req).
- ``pending``: set only while a transaction renames its files. It is written
  and fsynced *before* the first rename, naming each file's temp file, old and
  new SHA-256 and the change, so a run that finds it (the previous one
  crashed mid-renames) can roll the transaction forward: every temp file was
  complete and fsynced before the journal said so.

The journal is itself replaced atomically (temp file, fsync, rename, fsync of
the directory), so it is always either the previous or the next version.
"""

from __future__ import annotations

import os

from criu_aio_plugin import cjson
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import JOURNAL_NAME as JOURNAL_NAME  # re-exported
from criu_aio_plugin.images import TMP_PREFIX as TMP_PREFIX
from criu_aio_plugin.values import Record, Value

TYPE_CHECKING = False  # lean core (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "criu-aio-journal"
VERSION = 1
_MAX_JOURNAL_SIZE = 64 << 20

# A change to one ring: the new nr_req, or the exact submessage bytes to put back.
Change = int | bytes


class FileOriginal(Value):
    sha256: str  # the file as it was before criu-aio first changed it
    current_sha256: str  # the file as criu-aio last wrote it
    rings: dict[int, bytes]  # ring address -> original aios submessage bytes


class PendingFile(Value):
    file: str
    tmp: str
    old_sha256: str
    new_sha256: str
    changes: dict[int, Change]


class Pending(Value):
    txid: str
    action: str
    files: tuple[PendingFile, ...]


class Journal(Record):
    """The journal as loaded (mutable: a transaction updates it, then stores it)."""

    originals: dict[str, FileOriginal]
    history: list[dict[str, Any]]
    pending: Pending | None

    def __init__(
        self,
        originals: dict[str, FileOriginal] | None = None,
        history: list[dict[str, Any]] | None = None,
        pending: Pending | None = None,
    ) -> None:
        self.originals = {} if originals is None else originals
        self.history = [] if history is None else history
        self.pending = pending


def tmp_name(name: str) -> str:
    """The temp file name used while replacing ``name`` (one writer at a time: flock)."""
    return TMP_PREFIX + name


def _change_to_json(change: Change) -> dict[str, Any]:
    if isinstance(change, bytes):
        return {"raw": change.hex()}
    return {"nr_req": change}


def originals_to_json(originals: dict[str, FileOriginal]) -> dict[str, Any]:
    """``originals`` as stored (also by the archive journal, ``archive.journal``)."""
    return {
        name: {
            "sha256": o.sha256,
            "current_sha256": o.current_sha256,
            "rings": {str(r): raw.hex() for r, raw in o.rings.items()},
        }
        for name, o in sorted(originals.items())
    }


def originals_from_json(obj: Any) -> dict[str, FileOriginal]:
    """Inverse of ``originals_to_json``; raises ValueError on any mismatch."""
    if not isinstance(obj, dict):
        raise _Bad("originals: expected dict")
    return {
        name: FileOriginal(
            _get(o, "sha256", str),
            _get(o, "current_sha256", str),
            {int(r): bytes.fromhex(raw) for r, raw in _get(o, "rings", dict).items()},
        )
        for name, o in obj.items()
    }


def to_json(journal: Journal) -> dict[str, Any]:
    pending = None
    if journal.pending is not None:
        pending = {
            "txid": journal.pending.txid,
            "action": journal.pending.action,
            "files": [
                {
                    "file": f.file,
                    "tmp": f.tmp,
                    "old_sha256": f.old_sha256,
                    "new_sha256": f.new_sha256,
                    "changes": {str(r): _change_to_json(c) for r, c in f.changes.items()},
                }
                for f in journal.pending.files
            ],
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "originals": originals_to_json(journal.originals),
        "history": journal.history,
        "pending": pending,
    }


class _Bad(ValueError):
    pass


def _get(obj: Any, key: str, kind: type) -> Any:
    if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
        raise _Bad(f"{key}: expected {kind.__name__}")
    return obj[key]


def _parse_change(obj: Any) -> Change:
    if isinstance(obj, dict) and isinstance(obj.get("nr_req"), int):
        value: int = obj["nr_req"]
        return value
    return bytes.fromhex(_get(obj, "raw", str))


def from_json(obj: Any) -> Journal:
    """Parse a journal document; raises ValueError (``_Bad``) on any mismatch."""
    if _get(obj, "format", str) != FORMAT or _get(obj, "version", int) != VERSION:
        raise _Bad("not a criu-aio journal of a version this criu-aio reads")
    originals = originals_from_json(_get(obj, "originals", dict))
    history = _get(obj, "history", list)
    pending = None
    raw_pending = obj.get("pending")
    if raw_pending is not None:
        pending = Pending(
            _get(raw_pending, "txid", str),
            _get(raw_pending, "action", str),
            tuple(
                PendingFile(
                    _get(f, "file", str),
                    _get(f, "tmp", str),
                    _get(f, "old_sha256", str),
                    _get(f, "new_sha256", str),
                    {int(r): _parse_change(c) for r, c in _get(f, "changes", dict).items()},
                )
                for f in _get(raw_pending, "files", list)
            ),
        )
        for f in pending.files:
            if "/" in f.file or "/" in f.tmp or not f.tmp.startswith(TMP_PREFIX):
                raise _Bad(f"pending file names {f.file!r}/{f.tmp!r} are not plain names")
    return Journal(originals, history, pending)


def load(dir_fd: int, shown_dir: str) -> Journal:
    """The directory's journal, or an empty one when there is none."""
    path = os.path.join(shown_dir, JOURNAL_NAME)
    from criu_aio_plugin.images.mm import read_regular_file

    try:
        os.stat(JOURNAL_NAME, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return Journal()
    except OSError as err:
        raise ImageError(f"cannot stat: {err.strerror}", path=path, errno=err.errno) from err
    data, _ = read_regular_file(dir_fd, JOURNAL_NAME, path, _MAX_JOURNAL_SIZE)
    try:
        return from_json(cjson.loads(data.decode("utf-8")))
    except (ValueError, TypeError, AttributeError) as err:
        raise ImageError(
            f"unreadable journal: {err}",
            path=path,
            hint="move it aside only if you know no criu-aio run was interrupted",
        ) from err


def encode(journal: Journal) -> bytes:
    # Compact on purpose: json's C encoder is used only without indent, and the
    # history of a 1,000-image checkpoint holds thousands of ring records.
    return (cjson.dumps(to_json(journal), sort_keys=True) + "\n").encode()


def store(dir_fd: int, shown_dir: str, journal: Journal, write: Any) -> None:
    """Replace the journal atomically; ``write(name, tmp, data, like)`` does the I/O.

    (``rewrite.atomic.journal_writer`` is passed in to keep one implementation of the
    temp-write-fsync dance.)
    """
    data = encode(journal)
    tmp = tmp_name(JOURNAL_NAME)
    write(JOURNAL_NAME, tmp, data, None)
    try:
        os.rename(tmp, JOURNAL_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as err:
        raise ImageError(
            f"cannot replace the journal: {err.strerror}",
            path=os.path.join(shown_dir, JOURNAL_NAME),
            errno=err.errno,
        ) from err
