"""Checkpoint archives: podman's ``--export`` and the kubelet's ``checkpoint-*.tar``.

- ``detect``: what the file is (tar, gzip, zstd: by content, not by name).
- ``streams``: forward reading (plain or decompressing) and writing back.
- ``tarformat``: a strict tar walker and the exact header patch a rewrite needs.
- ``read``: one validating pass reading mm, pstree and inventory images and the
  container metadata (``metadata``), skipping page files.
- ``write`` / ``journal`` / ``transaction``: ``fix`` and ``revert`` of an archive,
  atomic (one rename) and journaled beside it.
"""

# The names below load their module on first use (PEP 562): a read-only
# caller (inspect) never imports the writer, its journal or the zstd codec.
_EXPORTS = {
    "ArchiveApplied": "transaction",
    "ArchiveCheckpoint": "read",
    "Compression": "streams",
    "ContainerInfo": "metadata",
    "FileId": "journal",
    "Limits": "read",
    "fix_archive": "transaction",
    "pending": "journal",
    "read_archive": "read",
    "recover_archive": "transaction",
    "revert_archive": "transaction",
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.archive.journal import FileId, pending
    from criu_aio_plugin.images.archive.metadata import ContainerInfo
    from criu_aio_plugin.images.archive.read import ArchiveCheckpoint, Limits, read_archive
    from criu_aio_plugin.images.archive.streams import Compression
    from criu_aio_plugin.images.archive.transaction import (
        ArchiveApplied,
        fix_archive,
        recover_archive,
        revert_archive,
    )


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "ArchiveApplied",
    "ArchiveCheckpoint",
    "Compression",
    "ContainerInfo",
    "FileId",
    "Limits",
    "fix_archive",
    "pending",
    "read_archive",
    "recover_archive",
    "revert_archive",
]
