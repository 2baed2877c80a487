"""Change AIO rings inside an mm image's bytes, keeping every other byte.

The mm image is ``header, u32 length, mm_entry`` (see ``raw``). Inside the
mm_entry each ring is one field-16 submessage ``aio_ring_entry {id = 1;
nr_req = 2; ring_len = 3}``. A splice walks the mm_entry's top-level fields
(``protowire.walk``), copies every span untouched except the field-16 submessages
of the rings it changes, and inside those replaces only the ``nr_req`` varint
(or, for a revert, the whole submessage with the bytes recorded before the
first change). Lengths that enclose a changed span (the submessage's, the
entry's) are re-encoded; nothing else moves.
"""

from __future__ import annotations

from criu_aio_plugin import protowire
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import raw

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

AIOS_FIELD = 16
_ID, _NR_REQ = 1, 2


def _payload(data: bytes, path: str) -> tuple[raw.RawImage, raw.RawEntry]:
    image = raw.loads_raw(data, path)
    if image.magic != raw.MM_MAGIC or len(image.entries) != 1:
        raise ImageError("not an mm image with one mm_entry", path=path, offset=4)
    return image, image.entries[0]


def _walk(buf: bytes, path: str, base: int, what: str) -> list[protowire.Field]:
    try:
        return protowire.walk(buf, depth=protowire.MAX_DEPTH - 1)
    except protowire.WireError as err:
        raise ImageError(
            f"malformed {what}: {err.reason}", path=path, offset=base + err.offset
        ) from err


def _aios(payload: bytes, path: str, base: int) -> list[protowire.Field]:
    try:
        found = protowire.find(payload, AIOS_FIELD)
    except protowire.WireError as err:
        raise ImageError(
            f"malformed mm_entry: {err.reason}", path=path, offset=base + err.offset
        ) from err
    return [f for f in found if f.wire_type == protowire.LENGTH_DELIMITED]


def _ring_id(sub: bytes, fields: list[protowire.Field], path: str, offset: int) -> int:
    ids = [f.value for f in fields if f.number == _ID and f.wire_type == protowire.VARINT]
    if not ids:
        raise ImageError("aio_ring_entry without id", path=path, offset=offset, field="aios.id")
    return ids[-1]


def aio_submessages(data: bytes, path: str) -> dict[int, bytes]:
    """``ring_id -> exact bytes`` of each aios submessage of an mm image."""
    _, entry = _payload(data, path)
    payload = entry.payload
    out: dict[int, bytes] = {}
    for f in _aios(payload, path, entry.payload_offset):
        sub = payload[f.value_start : f.end]
        base = entry.payload_offset + f.value_start
        out[_ring_id(sub, _walk(sub, path, base, "aio_ring_entry"), path, base)] = sub
    return out


def _set_nr_req(sub: bytes, fields: list[protowire.Field], nr_req: int) -> bytes:
    parts: list[bytes] = []
    pos = 0
    found = False
    for f in fields:
        if f.number == _NR_REQ and f.wire_type == protowire.VARINT:
            parts.append(sub[pos : f.value_start])
            parts.append(protowire.encode_varint(nr_req))
            pos = f.end
            found = True
    if not found:
        # proto2 `required`: CRIU always writes it; add it if a foreign writer did not.
        parts.append(protowire.varint_field(_NR_REQ, nr_req))
    parts.append(sub[pos:])
    return b"".join(parts)


def splice(
    data: bytes,
    path: str,
    changes: Mapping[int, int | bytes],
    originals: dict[int, bytes] | None = None,
) -> bytes:
    """New bytes of the mm image ``data`` with ``changes`` applied.

    ``changes`` maps a ring address to its new nr_req (an int) or to the exact
    submessage bytes to put back (bytes, for a revert). Every ring named must
    exist in the image. ``originals``, when given, receives the exact bytes
    of every ring's submessage as it was (the same walk, for the journal).
    Callers verify the result by decoding it (``rewrite`` does).
    """
    image, entry = _payload(data, path)
    payload = entry.payload
    base = entry.payload_offset
    parts: list[bytes] = []
    pos = 0
    done: set[int] = set()
    for f in _aios(payload, path, base):
        sub = payload[f.value_start : f.end]
        sub_fields = _walk(sub, path, base + f.value_start, "aio_ring_entry")
        ring_id = _ring_id(sub, sub_fields, path, base + f.value_start)
        if originals is not None:
            originals[ring_id] = sub
        change = changes.get(ring_id)
        if change is None:
            continue
        new_sub = change if isinstance(change, bytes) else _set_nr_req(sub, sub_fields, change)
        _, key_end = protowire.read_key(payload, f.start, f.value_start)
        parts.append(payload[pos:key_end])
        parts.append(protowire.encode_varint(len(new_sub)))
        parts.append(new_sub)
        pos = f.end
        done.add(ring_id)
    missing = set(changes) - done
    if missing:
        rings = ", ".join(f"{r:#x}" for r in sorted(missing))
        raise ImageError(f"no ring at {rings} in this image", path=path, field="mm_entry.aios")
    parts.append(payload[pos:])
    new_payload = b"".join(parts)
    if len(new_payload) > raw.MAX_ENTRY_SIZE:
        raise ImageError("rewritten mm_entry would exceed the entry maximum", path=path)
    new_raw = raw.RawImage(
        image.magic, (raw.RawEntry(entry.offset, new_payload),), image.common_magic
    )
    return raw.dumps_raw(new_raw)
