"""Checkpoint archives: podman's ``--export`` and the kubelet's ``checkpoint-*.tar``.

- ``detect``: what the file is (tar, gzip, zstd: by content, not by name).
- ``streams``: forward reading (plain or decompressing) and writing back.
- ``tarformat``: a strict tar walker and the exact header patch a rewrite needs.
- ``read``: one validating pass reading mm, pstree and inventory images and the
  container metadata (``metadata``), skipping page files.
- ``write`` / ``journal`` / ``transaction``: ``fix`` and ``revert`` of an archive,
  atomic (one rename) and journaled beside it.
"""

from criu_aio_plugin.images.archive.journal import FileId
from criu_aio_plugin.images.archive.metadata import ContainerInfo
from criu_aio_plugin.images.archive.read import (
    ArchiveCheckpoint,
    Limits,
    read_archive,
)
from criu_aio_plugin.images.archive.streams import Compression
from criu_aio_plugin.images.archive.transaction import (
    ArchiveApplied,
    fix_archive,
    pending,
    recover_archive,
    revert_archive,
)

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
