"""Checkpoint archives: podman's ``--export`` and the kubelet's ``checkpoint-*.tar``.

- ``streams``: what the file is (tar, gzip, zstd: by content) and forward reading.
- ``tarformat``: a strict tar walker and the exact header patch a rewrite needs.
- ``read``: one validating pass reading mm, pstree and inventory images and the
  container metadata (``metadata``), skipping page files.
"""

from criu_aio_plugin.images.archive.metadata import ContainerInfo
from criu_aio_plugin.images.archive.read import (
    ArchiveCheckpoint,
    Limits,
    is_archive,
    read_archive,
)
from criu_aio_plugin.images.archive.streams import Compression

__all__ = [
    "ArchiveCheckpoint",
    "Compression",
    "ContainerInfo",
    "Limits",
    "is_archive",
    "read_archive",
]
