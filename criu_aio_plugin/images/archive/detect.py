"""What a checkpoint file is, from its first bytes (never from its name).

podman writes zstd into a file called ``.tar.gz`` unless told otherwise
(``--compress``, default zstd); the kubelet writes an uncompressed tar.
Formats we do not read are named, so the user knows what to do.
"""

from __future__ import annotations

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images.archive.streams import BLOCK, GZIP_MAGIC, Compression, is_zstd
from criu_aio_plugin.images.archive.tarformat import checksum_ok

# Formats we recognise only to say clearly that we do not read them.
_UNSUPPORTED = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"PK\x03\x04", "zip"),
)


def looks_like_tar_header(block: bytes) -> bool:
    """A 512-byte block with the ustar magic or a valid header checksum (v7 tar)."""
    if len(block) < BLOCK:
        return False
    if block[257:263] in (b"ustar\x00", b"ustar "):
        return True
    return block.count(0) != BLOCK and checksum_ok(block)


def sniff(head: bytes, shown: str) -> Compression:
    """The format of a file from its first bytes (at least 512 when it has them)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if is_zstd(head):
        return Compression.ZSTD
    for magic, name in _UNSUPPORTED:
        if head.startswith(magic):
            raise ImageError(
                f"a {name} file; criu-aio reads checkpoint archives that are tar, "
                "gzip-compressed tar or zstd-compressed tar",
                path=shown,
                hint="decompress it first, or re-export with podman's --compress=zstd|gzip|none",
            )
    if looks_like_tar_header(head[:BLOCK]):
        return Compression.NONE
    raise ImageError(
        "neither an images directory nor a checkpoint archive (tar, tar.gz or tar.zst)",
        path=shown,
        hint="give the folder `criu dump -D` wrote, or the file podman/the kubelet exported",
    )
