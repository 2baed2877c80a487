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

Decoding rules: ``criu_aio_plugin.protowire``'s (the protobuf runtime's, as
measured), whose primitives this module uses. Specific to the mm_entry:

- the repeated uint64 ``mm_saved_auxv`` may come packed (a length-delimited
  run of varints);
- the uint32 fields keep the low 32 bits of their varint;
- submessages (vmas, aios) are decoded as they come; the last value of a
  scalar field wins;
- missing required fields are listed as the runtime's
  FindInitializationErrors lists them: ``name``, then ``vmas[i].name``, then
  ``aios[i].name``.
"""

from __future__ import annotations

from criu_aio_plugin.protowire import MASK32 as _MASK32
from criu_aio_plugin.protowire import MAX_DEPTH as _MAX_DEPTH
from criu_aio_plugin.protowire import WireError
from criu_aio_plugin.protowire import read_key as _key
from criu_aio_plugin.protowire import read_length as _length
from criu_aio_plugin.protowire import read_varint as _varint
from criu_aio_plugin.protowire import skip_value as _skip

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
