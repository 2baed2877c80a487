"""``protowire`` follows the protobuf runtime's wire rules, byte for byte.

The reference is the runtime itself: a message whose only field (a bool
numbered 2**29 - 2) the tests never write, so that parsing bytes into it checks
exactly the wire format (every field is an unknown field, stepped over).
``walk`` must accept what it accepts and refuse what it refuses; ``find`` must
agree with ``walk``; the values read must be the ones protobuf reads (through
``UnknownFieldSet``). (``google.protobuf.Empty`` will not do: a message
without fields takes another path in upb, which lets field number 0 pass.)
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import given
from hypothesis import strategies as st

from criu_aio_plugin import protowire


def _probe_class() -> type:
    file = descriptor_pb2.FileDescriptorProto(name="probe.proto", package="probe")
    file.message_type.add(name="Probe").field.add(
        name="unused",
        number=2**29 - 2,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("probe.Probe"))


Probe = _probe_class()


def _runtime(buf: bytes) -> list[tuple[int, int, object]] | None:
    """(number, wire type, value) of each top-level field as protobuf reads them, or None."""
    msg = Probe()
    try:
        msg.MergeFromString(buf)
    except Exception:  # DecodeError; its module is the runtime's
        return None
    out: list[tuple[int, int, object]] = []
    for f in UnknownFieldSet(msg):
        value = f.data if f.wire_type in (0, 1, 2, 5) else None
        out.append((f.field_number, f.wire_type, value))
    return out


def _ours(buf: bytes) -> list[tuple[int, int, object]] | None:
    try:
        fields = protowire.walk(buf)
    except protowire.WireError as err:
        assert 0 <= err.offset <= len(buf)
        for number in (1, 2, 16):
            with pytest.raises(protowire.WireError):
                protowire.find(buf, number)
        return None
    out: list[tuple[int, int, object]] = []
    for f in fields:
        value: object = f.value
        if f.wire_type == protowire.LENGTH_DELIMITED:
            value = buf[f.value_start : f.end]
        elif f.wire_type == protowire.START_GROUP:
            value = None
        out.append((f.number, f.wire_type, value))
    for number in (1, 2, 16):
        assert protowire.find(buf, number) == [f for f in fields if f.number == number]
    return out


def _agree(buf: bytes) -> bool:
    ours, theirs = _ours(buf), _runtime(buf)
    assert ours == theirs, buf.hex()
    return ours is not None


# Each decided by the runtime; the comment says what the module's rules say.
CORNERS = [
    (b"\x08" + b"\xff" * 9 + b"\x7f", True),  # 10-byte varint, bits past 64 dropped
    (b"\x08" + b"\xff" * 10 + b"\x01", False),  # 11-byte varint
    (b"\x08" + b"\x80" * 9 + b"\x02", True),  # only bit 64 set: the value is 0
    (b"\x08\xff", False),  # truncated varint
    (b"\xff\xff\xff\xff\x7f\x00", False),  # key past 32 bits
    (b"\xf8\xff\xff\xff\x0f\x00", True),  # key of 32 bits: field 2**29 - 1
    (b"\x88\x80\x80\x80\x80\x00\x05", False),  # key in 6 bytes
    (b"\x88\x80\x80\x80\x00\x05", True),  # key in 5 bytes
    (b"\x00\x01", False),  # field 0
    (b"\x80\x80\x80\x80\x00\x01", False),  # field 0, in 5 bytes
    (b"\x0b\x0c", True),  # empty group
    (b"\x0b\x00\x01\x0c", True),  # field 0 inside a group
    (b"\x0b\x14", False),  # group closed by another number
    (b"\x0b", False),  # group not closed
    (b"\x0c", False),  # end-group alone
    (b"\x0b\x0e\x0c", False),  # wire type 6 inside a group
    (b"\x0b" * 100 + b"\x0c" * 100, True),  # the deepest nesting allowed
    (b"\x0b" * 101 + b"\x0c" * 101, False),
    (b"\x0a\x80\x80\x80\x80\x00", True),  # length in 5 bytes
    (b"\x0a\x80\x80\x80\x80\x80\x00", False),  # length in 6 bytes
    (b"\x0a\x03ab", False),  # length past the end
    (b"\x0a\x02\x08", False),  # length past the end, by one
    (b"\x09" + b"\x01" * 8, True),  # fixed64
    (b"\x09" + b"\x01" * 7, False),
    (b"\x0d" + b"\x01" * 4, True),  # fixed32
    (b"\x0d" + b"\x01" * 3, False),
    (b"\x0e", False),  # wire type 6
    (b"\x0f", False),  # wire type 7
    (b"\x0a\x02\x0b\x0c", True),  # a length-delimited field is not looked into
    (b"", True),
]


@pytest.mark.parametrize(("buf", "accepted"), CORNERS, ids=[c[0].hex()[:24] for c in CORNERS])
def test_wire_format_corners(buf: bytes, accepted: bool) -> None:
    assert _agree(buf) == accepted
    assert _agree(b"\x10\x01" + buf + b"\x1a\x00") == accepted


def test_groups_nest_one_level_less_in_a_submessage() -> None:
    deepest = b"\x0b" * 99 + b"\x0c" * 99
    assert protowire.walk(deepest, depth=protowire.MAX_DEPTH - 1)
    with pytest.raises(protowire.WireError, match="too deep"):
        protowire.walk(b"\x0b" + deepest + b"\x0c", depth=protowire.MAX_DEPTH - 1)


def test_values_are_protobufs() -> None:
    [f] = protowire.walk(b"\x08" + b"\xff" * 9 + b"\x7f")
    assert f.value == protowire.MASK64
    assert protowire.int32(f.value) == -1
    assert protowire.int32(2**32 + 5) == 5
    assert protowire.int32(2**31) == -(2**31)


@pytest.mark.fuzz
@given(st.binary(max_size=64))
def test_arbitrary_bytes(buf: bytes) -> None:
    _agree(buf)


_TOKENS = [
    b"\x0b",
    b"\x0c",
    b"\x13",
    b"\x14",
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"\x08\x01",
    b"\x88\x80\x80\x80\x00",
    b"\xf8\xff\xff\xff\x0f",
    b"\x0a\x02",
    b"\x12\x00",
    b"\x82\x01\x02",
    b"\x09" + b"\x00" * 8,
    b"\x0d\x00\x00\x00\x00",
    b"\xff" * 9 + b"\x7f",
    b"\x0e",
]


@pytest.mark.fuzz
@given(st.lists(st.sampled_from(_TOKENS), max_size=16))
def test_bytes_of_wire_tokens(tokens: list[bytes]) -> None:
    _agree(b"".join(tokens))
