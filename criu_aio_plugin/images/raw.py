"""The raw layer of CRIU image files: header and length-prefixed entries, no protobuf.

Grammar of an image file (CRIU's criu/image.c and images/magic.h; every integer
little-endian)::

    image    := common_magic image_magic entry*
    common_magic := u32                 # IMG_COMMON_MAGIC 0x54564319
                                        # (IMG_SERVICE_MAGIC 0x55105940 for
                                        #  inventory-like service images)
    image_magic  := u32                 # e.g. MM_MAGIC 0x57492820 for mm-<pid>.img
    entry    := length:u32 payload       # payload: `length` bytes of a proto2
                                        # message of the image's type
                                        # (mm image: exactly one mm_entry)

Split from ``codec`` (which re-exports all of it and adds the protobuf
decoding) so that the restore path reads images without importing protobuf.
Each entry keeps its exact bytes, so callers can prove decode-then-encode
identity and splice.

Hostile input: a length prefix is checked against the bytes that remain and a
fixed maximum before anything is allocated, short reads are detected, and every
error is an ``ImageError`` naming the file and the byte offset.
"""

from __future__ import annotations

import io
import os
import struct

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940
MM_MAGIC = 0x57492820

# The largest entry we agree to read. An mm_entry at the kernel's default
# vm.max_map_count (65530 VMAs, ~60 bytes each) is about 4 MiB; 64 MiB leaves
# room for raised limits without letting a hostile length allocate gigabytes.
MAX_ENTRY_SIZE = 64 << 20

_U32 = struct.Struct("<I")  # magics and entry lengths
_HEADER = struct.Struct("<II")  # common magic, image magic
_READ_CHUNK = 1 << 20


class RawEntry(Value):
    """One entry: ``offset`` is where its 4-byte length prefix starts."""

    offset: int
    payload: bytes

    @property
    def payload_offset(self) -> int:
        return self.offset + _U32.size


class RawImage(Value):
    """An image file split into header and entries, bytes untouched."""

    magic: int
    entries: tuple[RawEntry, ...]
    common_magic: int = IMG_COMMON_MAGIC


def read_exactly(f: BinaryIO, n: int, path: str, offset: int, what: str = "data") -> bytes:
    """Read exactly ``n`` bytes or raise ``ImageError`` (truncated) at ``offset``.

    Reads in bounded chunks, so a hostile ``n`` costs no more memory than the
    bytes that are really there.
    """
    if n <= _READ_CHUNK:
        data = f.read(n)
    else:
        parts: list[bytes] = []
        got = 0
        while got < n:
            part = f.read(min(_READ_CHUNK, n - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
        data = b"".join(parts)
    if len(data) != n:
        raise ImageError(
            f"truncated: {what} needs {n} bytes, only {len(data)} left",
            path=path,
            offset=offset,
            hint="the file was cut short; re-copy the checkpoint",
        )
    return data


def _check_header(common: int, magic: int, path: str) -> None:
    if common not in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC):
        raise ImageError(
            f"not a CRIU image: magic {common:#010x}, expected {IMG_COMMON_MAGIC:#010x}",
            path=path,
            offset=0,
        )
    if magic in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC):
        raise ImageError(f"bad image magic {magic:#010x}", path=path, offset=4)


def _check_length(length: int, left: int, path: str, offset: int) -> None:
    if length > MAX_ENTRY_SIZE:
        raise ImageError(
            f"entry length {length} exceeds the {MAX_ENTRY_SIZE}-byte maximum",
            path=path,
            offset=offset,
        )
    if length > left:
        raise ImageError(
            f"entry length {length} runs past the end of the file ({left} bytes left)",
            path=path,
            offset=offset,
        )


def loads_raw(data: bytes, path: str = "<bytes>") -> RawImage:
    """Split ``data`` (a whole image file) into header and raw entries."""
    size = len(data)
    if size < _HEADER.size:
        raise ImageError(
            f"truncated: {size} bytes, an image header needs {_HEADER.size}", path=path, offset=0
        )
    common, magic = _HEADER.unpack_from(data, 0)
    _check_header(common, magic, path)
    entries: list[RawEntry] = []
    pos = _HEADER.size
    while pos < size:
        if size - pos < _U32.size:
            raise ImageError(
                f"truncated: {size - pos} stray bytes where an entry length belongs",
                path=path,
                offset=pos,
            )
        (length,) = _U32.unpack_from(data, pos)
        start = pos + _U32.size
        _check_length(length, size - start, path, pos)
        entries.append(RawEntry(pos, data[start : start + length]))
        pos = start + length
    return RawImage(magic, tuple(entries), common)


def load_raw(f: BinaryIO, path: str = "<stream>") -> RawImage:
    """Like ``loads_raw`` but from a file object (regular file, pipe, socket)."""
    left: int | None = None
    try:
        st = os.fstat(f.fileno())
        if st.st_size > 0:
            left = st.st_size - f.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        left = None
    header = read_exactly(f, _HEADER.size, path, 0, "the image header")
    common, magic = _HEADER.unpack(header)
    _check_header(common, magic, path)
    entries: list[RawEntry] = []
    pos = _HEADER.size
    while True:
        prefix = f.read(_U32.size)
        if not prefix:
            break
        if len(prefix) < _U32.size:
            raise ImageError(
                f"truncated: {len(prefix)} stray bytes where an entry length belongs",
                path=path,
                offset=pos,
            )
        (length,) = _U32.unpack(prefix)
        remaining = MAX_ENTRY_SIZE if left is None else left - pos - _U32.size
        _check_length(length, remaining, path, pos)
        payload = read_exactly(f, length, path, pos, f"entry at offset {pos}")
        entries.append(RawEntry(pos, payload))
        pos += _U32.size + length
    return RawImage(magic, tuple(entries), common)


def dumps_raw(image: RawImage) -> bytes:
    """The file bytes of a raw image (inverse of ``loads_raw``)."""
    parts = [_HEADER.pack(image.common_magic, image.magic)]
    for entry in image.entries:
        parts.append(_U32.pack(len(entry.payload)))
        parts.append(entry.payload)
    return b"".join(parts)
