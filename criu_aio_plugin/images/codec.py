"""Load and dump CRIU image files (the mm image is the one criu-aio needs).

The file grammar and the raw layer (header, length-prefixed entries, exact
bytes kept: ``loads_raw``/``load_raw``/``dumps_raw``) live in ``raw`` and are
re-exported here; this module adds the protobuf decoding. The restore path
reads mm images with ``mm_wire`` instead, never importing protobuf.

Shaped like pycriu's images API: ``load``/``dump`` work on binary file objects,
``loads``/``dumps`` on bytes, and message types come from a table of handlers
keyed by magic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from google.protobuf.message import DecodeError, Message

from criu_aio_plugin._proto import criu_aio_mm_pb2
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images.raw import (
    IMG_COMMON_MAGIC,
    IMG_SERVICE_MAGIC,
    MAX_ENTRY_SIZE,
    MM_MAGIC,
    RawEntry,
    RawImage,
    dumps_raw,
    load_raw,
    loads_raw,
    read_exactly,
)

__all__ = [
    "HANDLERS",
    "IMG_COMMON_MAGIC",
    "IMG_SERVICE_MAGIC",
    "MAX_ENTRY_SIZE",
    "MM_MAGIC",
    "Handler",
    "Image",
    "RawEntry",
    "RawImage",
    "decode",
    "decode_entry",
    "dump",
    "dumps",
    "dumps_raw",
    "handler_for",
    "load",
    "load_raw",
    "loads",
    "loads_raw",
    "read_exactly",
]


@dataclass(frozen=True)
class Handler:
    """How to decode the entries of one kind of image."""

    name: str
    magic: int
    message: type[Message]


HANDLERS: dict[int, Handler] = {
    MM_MAGIC: Handler("MM", MM_MAGIC, criu_aio_mm_pb2.mm_entry),
}


@dataclass
class Image:
    """A decoded image: its magic and one protobuf message per entry."""

    magic: int
    entries: list[Message] = field(default_factory=list)
    common_magic: int = IMG_COMMON_MAGIC

    @property
    def name(self) -> str:
        handler = HANDLERS.get(self.magic)
        return handler.name if handler else f"{self.magic:#010x}"


def handler_for(magic: int, path: str) -> Handler:
    handler = HANDLERS.get(magic)
    if handler is None:
        known = ", ".join(f"{h.name} {m:#010x}" for m, h in HANDLERS.items())
        raise ImageError(
            f"unsupported image magic {magic:#010x} (criu-aio reads: {known})",
            path=path,
            offset=4,
        )
    return handler


def decode_entry(handler: Handler, entry: RawEntry, path: str) -> Message:
    """Parse one entry's payload, requiring every proto2 ``required`` field."""
    msg = handler.message()
    try:
        msg.ParseFromString(entry.payload)
    except DecodeError as err:
        raise ImageError(
            f"malformed {handler.message.DESCRIPTOR.name} protobuf: {err}",
            path=path,
            offset=entry.payload_offset,
        ) from err
    if not msg.IsInitialized():
        # FindInitializationErrors exists on every generated message (python
        # protobuf adds it), but the Message stub does not declare it.
        missing = ", ".join(getattr(msg, "FindInitializationErrors")())  # noqa: B009
        raise ImageError(
            f"{handler.message.DESCRIPTOR.name} lacks required field(s)",
            path=path,
            offset=entry.payload_offset,
            field=missing,
        )
    return msg


def decode(raw: RawImage, path: str = "<bytes>") -> Image:
    handler = handler_for(raw.magic, path)
    return Image(raw.magic, [decode_entry(handler, e, path) for e in raw.entries], raw.common_magic)


def loads(data: bytes, path: str = "<bytes>") -> Image:
    """Decode a whole image file given as bytes."""
    return decode(loads_raw(data, path), path)


def load(f: BinaryIO, path: str = "<stream>") -> Image:
    """Decode an image file from a binary file object."""
    return decode(load_raw(f, path), path)


def dumps(image: Image) -> bytes:
    """Encode ``image`` (fields in number order; unknown fields kept)."""
    raw = RawImage(
        image.magic,
        tuple(RawEntry(0, m.SerializeToString()) for m in image.entries),
        image.common_magic,
    )
    return dumps_raw(raw)


def dump(image: Image, f: BinaryIO) -> None:
    """Write ``image`` to a binary file object."""
    f.write(dumps(image))
