"""The image codec and wire walker: one case table, driven in both directions."""

from __future__ import annotations

import io
import struct

import pytest

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_mm_pb2
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import codec, splice, synthetic

MAGICS = struct.pack("<II", codec.IMG_COMMON_MAGIC, codec.MM_MAGIC)

# (name, message fields, exact encoded file bytes): decode must give the
# message and encode must give the bytes.
AIO = criu_aio_mm_pb2.aio_ring_entry
_RING = AIO(id=0x7F0000001000, nr_req=124, ring_len=4096)
_MIN_MM = criu_aio_mm_pb2.mm_entry(
    mm_start_code=1,
    mm_end_code=2,
    mm_start_data=3,
    mm_end_data=4,
    mm_start_stack=5,
    mm_start_brk=6,
    mm_brk=7,
    mm_arg_start=8,
    mm_arg_end=9,
    mm_env_start=10,
    mm_env_end=11,
    exe_file_id=12,
)
_MIN_PAYLOAD = bytes(
    # (field number << 3, value) for fields 1..12: all varints
    [b for n in range(1, 13) for b in (n << 3, n)]
)
_RING_BYTES = (
    bytes([0x08]) + protowire.encode_varint(0x7F0000001000) + bytes([0x10, 124, 0x18, 0x80, 0x20])
)
_WITH_RING = criu_aio_mm_pb2.mm_entry()
_WITH_RING.CopyFrom(_MIN_MM)
_WITH_RING.aios.append(_RING)
_WITH_RING_PAYLOAD = _MIN_PAYLOAD + bytes([0x82, 0x01, len(_RING_BYTES)]) + _RING_BYTES

CASES = [
    ("no entries", [], MAGICS),
    ("minimal mm_entry", [_MIN_MM], MAGICS + struct.pack("<I", len(_MIN_PAYLOAD)) + _MIN_PAYLOAD),
    (
        "one ring",
        [_WITH_RING],
        MAGICS + struct.pack("<I", len(_WITH_RING_PAYLOAD)) + _WITH_RING_PAYLOAD,
    ),
]


@pytest.mark.parametrize(("name", "messages", "data"), CASES, ids=[c[0] for c in CASES])
def test_decode(name: str, messages: list[criu_aio_mm_pb2.mm_entry], data: bytes) -> None:
    image = codec.loads(data, name)
    assert image.magic == codec.MM_MAGIC
    assert image.name == "MM"
    assert image.entries == messages
    assert codec.load(io.BytesIO(data), name).entries == messages


@pytest.mark.parametrize(("name", "messages", "data"), CASES, ids=[c[0] for c in CASES])
def test_encode(name: str, messages: list[criu_aio_mm_pb2.mm_entry], data: bytes) -> None:
    image = codec.Image(codec.MM_MAGIC, list(messages))
    assert codec.dumps(image) == data
    out = io.BytesIO()
    codec.dump(image, out)
    assert out.getvalue() == data


def test_unknown_fields_survive_decode_encode() -> None:
    # field 99 (varint) inside the mm_entry and field 7 inside a ring: a newer CRIU's additions
    ring = _RING_BYTES + bytes([0x38, 0x05])
    payload = _MIN_PAYLOAD + bytes([0x82, 0x01, len(ring)]) + ring + bytes([0x98, 0x06, 0x2A])
    data = MAGICS + struct.pack("<I", len(payload)) + payload
    assert codec.dumps(codec.loads(data)) == data
    # and the splice keeps them while changing nr_req
    new = splice.splice(data, "x", {0x7F0000001000: 300})
    msg = codec.loads(new).entries[0]
    assert isinstance(msg, criu_aio_mm_pb2.mm_entry)
    assert msg.aios[0].nr_req == 300
    assert new.endswith(bytes([0x38, 0x05, 0x98, 0x06, 0x2A]))
    assert splice.splice(new, "x", {0x7F0000001000: 124}) == data


def test_synthetic_images_round_trip() -> None:
    for seed in range(20):
        rings = synthetic.rings_for([1 + seed % 4, 2, 8, 16])
        data = synthetic.mm_image_bytes(rings, 50 + seed * 10, seed)
        assert codec.dumps(codec.loads(data)) == data
        assert codec.dumps_raw(codec.loads_raw(data)) == data


def test_raw_entries_carry_offsets() -> None:
    data = CASES[2][2] + CASES[1][2][8:]
    raw = codec.loads_raw(data, "two")
    assert [e.offset for e in raw.entries] == [8, 8 + 4 + len(_WITH_RING_PAYLOAD)]
    assert raw.entries[1].payload == _MIN_PAYLOAD


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32 - 1, 2**63, 2**64 - 1])
def test_varint_both_directions(value: int) -> None:
    enc = protowire.encode_varint(value)
    assert protowire.read_varint(enc, 0, len(enc)) == (value, len(enc))
    field = protowire.varint_field(5, value)
    [f] = protowire.walk(field)
    assert (f.number, f.wire_type, f.value, f.end) == (5, protowire.VARINT, value, len(field))


def test_find_agrees_with_walk() -> None:
    data = synthetic.mm_image_bytes(synthetic.rings_for([1, 2, 3, 4]), 200, 3)
    payload = codec.loads_raw(data).entries[0].payload
    full = protowire.walk(payload)
    for number in (1, 13, 14, 15, 16, 17, 99):
        assert protowire.find(payload, number) == [f for f in full if f.number == number]


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint longer than 10 bytes"),
        (b"\x00\x01", "field number 0"),
        (b"\x0a\x05abc", "runs past the message end"),
        (b"\x0b", "group 1 is not closed"),
        (b"\x0c", "end-group without its start"),
        (b"\x0e", "unsupported wire type 6"),
        (b"\x09\x01\x02", "truncated fixed64"),
        (b"\x0d\x01", "truncated fixed32"),
    ],
)
def test_wire_errors(buf: bytes, reason: str) -> None:
    with pytest.raises(protowire.WireError, match=reason):
        protowire.walk(buf)
    with pytest.raises(protowire.WireError, match=reason):
        protowire.find(buf, 16)


def test_load_from_pipe_like_stream_bounds_length() -> None:
    class Stream(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._b = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            chunk = self._b.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    data = MAGICS + struct.pack("<I", 50_000_000) + b"x" * 10
    with pytest.raises(ImageError, match="truncated") as exc:
        codec.load(io.BufferedReader(Stream(data)), "pipe")
    assert exc.value.offset == 8
