"""CRIU checkpoint images: the codec, the mm image's AIO rings, and the rewrite.

- ``codec``: load/dump image files (header, length-prefixed protobuf entries).
- ``mm_wire``: the mm_entry decoded without protobuf (``criu_aio_plugin.protowire``).
- ``mm``: ``read_rings(images_dir)`` and the validation of every ring.
- ``splice``: change nr_req inside an mm image's bytes, nothing else.
- ``journal`` / ``rewrite`` (a package: lock, atomic, verify, recovery,
  transaction, revert): the crash-safe, journaled, revertible rewrite.
"""

from criu_aio_plugin.images.mm import ImageRing, read_rings

# The files criu-aio itself keeps in an images directory (``journal``): named
# here so that asking whether there are any costs no import.
JOURNAL_NAME = "criu-aio.journal"
TMP_PREFIX = ".criu-aio-tmp."

__all__ = ["JOURNAL_NAME", "TMP_PREFIX", "ImageRing", "read_rings"]
