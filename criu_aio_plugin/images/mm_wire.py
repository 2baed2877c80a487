"""Decode an mm_entry without protobuf: the reader on a restore's critical path.

Why: importing the protobuf runtime and the generated mm module costs about
15 ms, a third of what ``criu-aio swrk`` may add to a restore; reading a few
hundred fields by hand costs a fraction of a millisecond. ``codec`` (protobuf)
stays the decoder of the load/dump API and the inspection tooling;
tests/unit/test_mm_wire.py proves both accept the same bytes and find the same
rings (golden images from CRIU, fuzzed payloads).

The message (protos/criu_aio_mm.proto)::

    mm_entry       fields 1-11 uint64, 12 uint32 (all required), 13 repeated
                   uint64, 14 repeated vma_entry, 15 int32, 16 repeated
                   aio_ring_entry, 17 bool
    vma_entry      fields 1-4 uint64, 5-7 uint32, 8 sint64 (required), 9 uint64,
                   10 uint32
    aio_ring_entry 1 uint64 id, 2 uint32 nr_req, 3 uint32 ring_len (required)

Decoding rules, the protobuf runtime's (upb) as measured on this build:

- a varint has at most 10 bytes, bits past 64 are dropped, a uint32 field keeps
  the low 32 bits; a key has at most 5 bytes and fits 32 bits; a length has at
  most 5 bytes;
- field number 0 (but inside a group), wire types 6 and 7, an end-group without its start, and
  anything running past its message are malformed;
- a known field arriving with another wire type is an unknown field; unknown
  fields (groups too, nested at most 100 deep with the messages around them)
  are stepped over, so must be well formed;
- the repeated uint64 may be packed (a length-delimited run of varints);
- submessages (vmas, aios) are decoded as they come; the last value of a
  scalar field wins;
- missing required fields are listed as the runtime's
  FindInitializationErrors lists them: ``name``, then ``vmas[i].name``, then
  ``aios[i].name``.
"""

from __future__ import annotations

from criu_aio_plugin.images.wire import WireError

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
_MAX_DEPTH = 100  # the runtime's default recursion limit

_MM_REQUIRED = (
    "mm_start_code",
    "mm_end_code",
    "mm_start_data",
    "mm_end_data",
    "mm_start_stack",
    "mm_start_brk",
    "mm_brk",
    "mm_arg_start",
    "mm_arg_end",
    "mm_env_start",
    "mm_env_end",
    "exe_file_id",
)  # fields 1..12
_VMA_REQUIRED = ("start", "end", "pgoff", "shmid", "prot", "flags", "status", "fd")  # 1..8
_AIO_REQUIRED = ("id", "nr_req", "ring_len")  # 1..3
_MM_SCALARS = frozenset((*range(1, 13), 15, 17))  # varint fields of mm_entry
_AUXV, _VMAS, _AIOS = 13, 14, 16


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A varint of at most 10 bytes at *pos* (bits past 64 dropped); (value, next)."""
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes", start)


def _short_varint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A key or a length: at most 5 bytes, at most 32 bits."""
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated {what}", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result > _MASK32:
                raise WireError(f"{what} exceeds 32 bits", start)
            return result, pos
        shift += 7
        if shift >= 35:
            raise WireError(f"{what} longer than 5 bytes", start)


def _key(buf: bytes, pos: int, end: int, in_group: bool = False) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        key, nxt = b, pos + 1
    else:
        key, nxt = _short_varint(buf, pos, end, "key")
    if key >> 3 == 0 and not in_group:
        # Inside a group the runtime only steps over fields and lets 0 pass.
        raise WireError("field number 0", pos)
    return key, nxt


def _length(buf: bytes, pos: int, end: int, field_start: int) -> tuple[int, int]:
    """Start and end of a length-delimited value whose length varint is at *pos*."""
    if pos < end and buf[pos] < 0x80:
        length, vstart = buf[pos], pos + 1
    else:
        length, vstart = _short_varint(buf, pos, end, "length")
    if length > end - vstart:
        raise WireError(f"length {length} runs past the message end", field_start)
    return vstart, vstart + length


def _skip(buf: bytes, key: int, pos: int, end: int, depth: int, field_start: int) -> int:
    """Step over the value of an unknown field (*pos* is just past its key)."""
    wire_type = key & 7
    if wire_type == 0:
        return _varint(buf, pos, end)[1]
    if wire_type == 2:
        return _length(buf, pos, end, field_start)[1]
    if wire_type in (1, 5):
        size = 8 if wire_type == 1 else 4
        if size > end - pos:
            raise WireError(f"truncated fixed{size * 8}", field_start)
        return pos + size
    if wire_type == 3:
        return _skip_group(buf, key >> 3, pos, end, depth - 1, field_start)
    if wire_type == 4:
        raise WireError("end-group without its start", field_start)
    raise WireError(f"unsupported wire type {wire_type}", field_start)


def _skip_group(buf: bytes, number: int, pos: int, end: int, depth: int, start: int) -> int:
    if depth < 0:
        raise WireError("groups nested too deep", start)
    while pos < end:
        field_start = pos
        key, pos = _key(buf, pos, end, in_group=True)
        if key & 7 == 4:
            if key >> 3 != number:
                raise WireError(f"end-group {key >> 3} closes group {number}", field_start)
            return pos
        pos = _skip(buf, key, pos, end, depth, field_start)
    raise WireError(f"group {number} is not closed", start)


def _scalars(
    buf: bytes, pos: int, end: int, depth: int, highest: int, values: dict[int, int] | None
) -> int:
    """Decode a message whose known fields are all varints numbered 1..*highest*.

    Returns the bit mask of the fields present; their last values go to *values*.
    """
    if depth < 0:
        raise WireError("messages nested too deep", pos)
    present = 0
    while pos < end:
        field_start = pos
        key = buf[pos]
        if key < 0x80 and key >= 8:
            pos += 1
        else:
            key, pos = _key(buf, pos, end)
        number = key >> 3
        if key & 7 == 0 and number <= highest:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = _varint(buf, pos, end)
            present |= 1 << number
            if values is not None:
                values[number] = value
        else:
            pos = _skip(buf, key, pos, end, depth, field_start)
    return present


def _missing(names: tuple[str, ...], present: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{name}" for i, name in enumerate(names, 1) if not present >> i & 1]


def decode_mm_entry(buf: bytes) -> tuple[list[tuple[int, int, int]], list[str]]:
    """Validate the mm_entry in *buf*; return its rings and its missing required fields.

    Rings are ``(id, nr_req, ring_len)`` in file order (0 for a missing value).
    Raises ``WireError`` (offset relative to *buf*) where the runtime raises
    DecodeError.
    """
    end = len(buf)
    pos = 0
    present = 0
    vmas: list[int] = []
    aios: list[tuple[int, int, int]] = []
    aios_present: list[int] = []
    depth = _MAX_DEPTH
    while pos < end:
        field_start = pos
        key, pos = _key(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0 and number in _MM_SCALARS:
            pos = _varint(buf, pos, end)[1]
            present |= 1 << number
        elif wire_type == 2 and number == _VMAS:
            vstart, pos = _length(buf, pos, end, field_start)
            vmas.append(_scalars(buf, vstart, pos, depth - 1, 10, None))
        elif wire_type == 2 and number == _AIOS:
            vstart, pos = _length(buf, pos, end, field_start)
            values: dict[int, int] = {}
            aios_present.append(_scalars(buf, vstart, pos, depth - 1, 3, values))
            aios.append(
                (
                    values.get(1, 0),
                    values.get(2, 0) & _MASK32,
                    values.get(3, 0) & _MASK32,
                )
            )
        elif wire_type == 0 and number == _AUXV:
            pos = _varint(buf, pos, end)[1]
        elif wire_type == 2 and number == _AUXV:  # packed
            vstart, pos = _length(buf, pos, end, field_start)
            while vstart < pos:
                vstart = _varint(buf, vstart, pos)[1]
        else:
            pos = _skip(buf, key, pos, end, depth, field_start)
    missing = _missing(_MM_REQUIRED, present)
    for i, mask in enumerate(vmas):
        missing += _missing(_VMA_REQUIRED, mask, f"vmas[{i}].")
    for i, mask in enumerate(aios_present):
        missing += _missing(_AIO_REQUIRED, mask, f"aios[{i}].")
    return aios, missing
