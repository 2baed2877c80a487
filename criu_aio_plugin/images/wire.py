"""A minimal protobuf wire-format walker: enough to splice, nothing more.

Why it exists: the rewrite must keep every byte of an mm image except the
``nr_req`` values it changes. Re-serialising a parsed ``mm_entry`` would
usually give the same bytes (protobuf-c and upb both emit fields in number
order), but "usually" is not a guarantee: field order, unknown fields, packed
vs. unpacked repeats and non-minimal varints are all the encoder's choice. So
the rewrite walks the top-level fields of the serialised message, keeps the
byte spans it does not change, and rebuilds only the spans it must.

Wire format (protobuf encoding, proto2 and proto3 alike)::

    message   := field*
    field     := key value
    key       := varint                    # (field_number << 3) | wire_type
    value     := varint                    # wire type 0
               | 8 bytes                   # wire type 1 (fixed64)
               | varint(len) len bytes     # wire type 2 (length-delimited)
               | 4 bytes                   # wire type 5 (fixed32)

Groups (wire types 3 and 4) are deprecated and never written by CRIU; they are
rejected here as malformed.
"""

from __future__ import annotations

from criu_aio_plugin.values import Value

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5

_MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """Malformed wire data; ``offset`` is relative to the walked buffer."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.reason = message
        self.offset = offset


class Field(Value):
    """One top-level field occurrence: ``buf[start:end]`` is key and value.

    For a varint field ``value`` is the decoded integer; for a length-delimited
    one ``buf[value_start:end]`` is the payload and ``value`` its length; for
    fixed fields ``value`` is the little-endian integer.
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int
    value: int


def read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError("truncated varint", start)
        if pos - start >= _MAX_VARINT_BYTES:
            raise WireError("varint longer than 10 bytes", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >= 1 << 64:
                raise WireError("varint exceeds 64 bits", start)
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    """The minimal varint encoding of a non-negative ``value`` (< 2**64)."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def walk(buf: bytes | memoryview, start: int = 0, end: int | None = None) -> list[Field]:
    """Every top-level field of the message in ``buf[start:end]``, in order.

    Raises ``WireError`` on truncation, a bad wire type, field number 0, or a
    length running past ``end``. Offsets in the result and errors are absolute
    positions in ``buf``.
    """
    stop = len(buf) if end is None else end
    pos = start
    fields: list[Field] = []
    while pos < stop:
        field_start = pos
        key, pos = read_varint(buf, pos, stop)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0", field_start)
        if wire_type == VARINT:
            value, nxt = read_varint(buf, pos, stop)
            fields.append(Field(number, wire_type, field_start, pos, nxt, value))
            pos = nxt
        elif wire_type == LENGTH_DELIMITED:
            length, vstart = read_varint(buf, pos, stop)
            if length > stop - vstart:
                raise WireError(
                    f"field {number}: length {length} runs past the message end", field_start
                )
            fields.append(Field(number, wire_type, field_start, vstart, vstart + length, length))
            pos = vstart + length
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if size > stop - pos:
                raise WireError(f"field {number}: truncated fixed{size * 8}", field_start)
            value = int.from_bytes(buf[pos : pos + size], "little")
            fields.append(Field(number, wire_type, field_start, pos, pos + size, value))
            pos += size
        else:
            raise WireError(f"field {number}: unsupported wire type {wire_type}", field_start)
    return fields


def find(buf: bytes, number: int) -> list[Field]:
    """The occurrences of field ``number`` among the top-level fields of ``buf``.

    Same checks as ``walk`` (every field is stepped over and validated), but no
    ``Field`` is built for the others and one-byte keys and lengths take a fast
    path: an mm_entry is mostly hundreds of small VMA submessages.
    """
    stop = len(buf)
    pos = 0
    found: list[Field] = []
    while pos < stop:
        field_start = pos
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, stop)
        wire_type = key & 7
        if wire_type == LENGTH_DELIMITED:
            if pos < stop and buf[pos] < 0x80:
                length, vstart = buf[pos], pos + 1
            else:
                length, vstart = read_varint(buf, pos, stop)
            end = vstart + length
            if end > stop or key >> 3 == 0:
                # Let the general walker produce the precise error.
                walk(buf, field_start, stop)
            if key >> 3 == number:
                found.append(Field(number, wire_type, field_start, vstart, end, length))
            pos = end
        elif wire_type == VARINT and key >> 3 != number:
            # Step over the value: a varint ends at its first byte below 0x80.
            vstart = pos
            while pos < stop and buf[pos] >= 0x80 and pos - vstart < _MAX_VARINT_BYTES:
                pos += 1
            if pos >= stop or pos - vstart >= _MAX_VARINT_BYTES or key >> 3 == 0:
                walk(buf, field_start, stop)  # raises the precise error
            pos += 1
        else:
            field = walk(buf, field_start, _one_field_end(buf, field_start, stop))[0]
            if field.number == number:
                found.append(field)
            pos = field.end
    return found


def _one_field_end(buf: bytes, pos: int, stop: int) -> int:
    """End of the (non length-delimited) field starting at ``pos``."""
    key, p = read_varint(buf, pos, stop)
    wire_type = key & 7
    if wire_type == VARINT:
        return read_varint(buf, p, stop)[1]
    if wire_type == FIXED64:
        return min(p + 8, stop)
    if wire_type == FIXED32:
        return min(p + 4, stop)
    walk(buf, pos, stop)  # raises for groups and unknown wire types
    return stop


def varint_field(number: int, value: int) -> bytes:
    """Key and value of a varint field."""
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def length_delimited_field(number: int, payload: bytes) -> bytes:
    """Key, length and payload of a length-delimited field."""
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(payload)) + payload
