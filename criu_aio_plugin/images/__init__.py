"""CRIU checkpoint images: the codec, the mm image's AIO rings, and the rewrite.

- ``codec``: load/dump image files (header, length-prefixed protobuf entries).
- ``mm_wire``: the mm_entry decoded without protobuf (``criu_aio_plugin.protowire``).
- ``mm``: ``read_rings(images_dir)`` and the validation of every ring.
- ``splice``: change nr_req inside an mm image's bytes, nothing else.
- ``journal`` / ``rewrite`` (a package: lock, atomic, verify, recovery,
  transaction, revert): the crash-safe, journaled, revertible rewrite.
"""

from criu_aio_plugin.images.mm import ImageRing, read_rings

__all__ = ["ImageRing", "read_rings"]
