"""``rpc.wire.parse_request`` reads a criu_req exactly as protobuf does.

The reference is the protobuf runtime: ``criu_req().MergeFromString(data)``
then ``IsInitialized()``. On every datagram both must accept or both refuse,
and where they accept, every field ``RpcRequest`` exposes must be equal: after
merging repeated ``opts`` and ``opts.ps``, appending ``inherit_fd``, keeping
the last scalar, stepping over unknown fields.

The one allowed difference: ``parse_request`` also refuses a datagram CRIU's
own parser (protobuf-c) would read otherwise than protobuf on one of those
fields (``AmbiguousRequest``; see rpc/wire.py). Each such refusal is checked
against what protobuf itself shows of the datagram (the unknown fields it
kept, the last ``opts`` parsed alone, a NUL in a string), so the reader cannot
excuse a disagreement by calling it ambiguous.

Datagrams are built by hypothesis from the proto's fields (random messages of
the generated classes, serialised), cut into pieces (an ``opts`` split in
two, a ``ps`` in each), duplicated, mixed with hand-made fields (unknown
numbers, groups, known fields with another wire type, out-of-range enums,
10-byte varints, NUL bytes), and damaged (random bytes inserted, flipped,
cut off).
"""

from __future__ import annotations

from collections import Counter

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import event, given, settings
from hypothesis import strategies as st

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.rpc import wire
from criu_aio_plugin.rpc.wire import AmbiguousRequest, RpcRequest

# -- the two readers -----------------------------------------------------------------


def _text(value: str | bytes) -> str:
    # proto2 strings: the runtime gives bytes when they are not UTF-8
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def _protobuf(data: bytes) -> tuple[rpc_pb2.criu_req, RpcRequest] | None:
    """The runtime's parse: the message and the RpcRequest it describes, or None."""
    msg = rpc_pb2.criu_req()
    try:
        msg.MergeFromString(data)
    except DecodeError:
        return None
    if not msg.IsInitialized():
        return None
    if not msg.HasField("opts"):
        return msg, RpcRequest(msg.type, keep_open=msg.keep_open)
    o = msg.opts
    return msg, RpcRequest(
        req_type=msg.type,
        has_opts=True,
        images_dir_fd=o.images_dir_fd,
        images_dir=_text(o.images_dir) if o.HasField("images_dir") else None,
        work_dir_fd=o.work_dir_fd if o.HasField("work_dir_fd") else None,
        rst_sibling=o.rst_sibling if o.HasField("rst_sibling") else None,
        inherit_fd_keys=tuple(_text(i.key) for i in o.inherit_fd),
        page_server_fd=o.ps.fd if o.HasField("ps") and o.ps.HasField("fd") else None,
        status_fd=o.status_fd if o.HasField("status_fd") else None,
        config_file=_text(o.config_file) if o.HasField("config_file") else None,
        keep_open=msg.keep_open,
        log_file=_text(o.log_file) if o.HasField("log_file") else None,
    )


def _raw_view_class() -> type[Message]:
    """criu_req with ``opts`` as repeated bytes: each occurrence as sent."""
    file = descriptor_pb2.FileDescriptorProto(name="raw_view.proto", package="raw_view")
    file.message_type.add(name="Req").field.add(
        name="opts",
        number=2,
        type=FieldDescriptor.TYPE_BYTES,
        label=FieldDescriptor.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("raw_view.Req"))


RawView = _raw_view_class()


def _unknown(msg: Message) -> set[tuple[int, int]]:
    return {(f.field_number, f.wire_type) for f in UnknownFieldSet(msg)}


def _evidence(err: AmbiguousRequest, data: bytes, msg: rpc_pb2.criu_req) -> bool:
    """Whether protobuf's own view of *data* shows what the refusal claims."""
    field = err.field
    if field == "type":
        return (1, 0) in _unknown(msg)  # a type value protobuf set aside
    if field in ("keep_open", "opts.rst_sibling"):
        holder, number, name = (
            (msg, 4, "keep_open") if field == "keep_open" else (msg.opts, 26, "rst_sibling")
        )
        other_wire_type = any(n == number and t != 0 for n, t in _unknown(holder))
        past_64_bits = holder.HasField(name) and not getattr(holder, name)
        return other_wire_type or past_64_bits
    if field == "opts.images_dir_fd":
        raw = RawView()
        raw.MergeFromString(data)
        last = rpc_pb2.criu_opts()
        last.MergeFromString(raw.opts[-1])  # type: ignore[attr-defined]
        return last.images_dir_fd != msg.opts.images_dir_fd
    if field.startswith("opts.inherit_fd["):
        index = int(field.split("[")[1].split("]")[0])
        return b"\0" in msg.opts.inherit_fd[index].key.encode("utf-8", "surrogateescape")
    if field in ("opts.images_dir", "opts.config_file", "opts.log_file"):
        value = getattr(msg.opts, field.split(".")[1])
        return "\0" in _text(value)
    return False


def _compare(data: bytes) -> str:
    """Both readers on *data*; the outcome's name (for the statistics)."""
    theirs = _protobuf(data)
    try:
        ours = wire.parse_request(data)
    except AmbiguousRequest as err:
        assert theirs is not None, f"protobuf refuses {data.hex()}: not an ambiguity"
        assert _evidence(err, data, theirs[0]), f"{err} without evidence: {data.hex()}"
        return f"refused as ambiguous: {err.field.split('[')[0]}"
    except ClientError as err:
        assert theirs is None, f"{err}, but protobuf accepts {data.hex()}"
        return "refused by both"
    assert theirs is not None, f"protobuf refuses {data.hex()}, we read {ours}"
    assert ours == theirs[1], data.hex()
    head = wire.read_head(data)
    assert (head.req_type, head.keep_open) == (ours.req_type, ours.keep_open)
    if not ours.has_opts:
        return "accepted by both"
    raw = RawView()
    raw.MergeFromString(data)
    merged = len(raw.opts)  # type: ignore[attr-defined]
    return f"accepted by both, {'one opts' if merged == 1 else 'opts merged'}"


# -- the schema is the proto's -----------------------------------------------------------


def _check_schema(schema: protowire.Message, descriptor: Descriptor) -> None:
    assert schema.name == descriptor.name
    for field in descriptor.fields:
        spec = schema.fields.get(field.number)
        required = field.is_required
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert spec is not None, f"{descriptor.name}.{field.name}: message fields are listed"
            assert spec.kind == (protowire.REPEATED if field.is_repeated else protowire.MESSAGE)
            assert spec.message is not None
            _check_schema(spec.message, field.message_type)
        elif required:
            assert spec is not None, f"{descriptor.name}.{field.name}: required fields are listed"
        if spec is None:
            continue
        assert spec.name == field.name
        assert (field.number in schema.required) == required, field.name
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            assert spec.kind == protowire.BYTES, field.name
        elif field.type != FieldDescriptor.TYPE_MESSAGE:
            assert spec.kind == protowire.SCALAR, field.name
            assert field.type not in (FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64)
            if field.type == FieldDescriptor.TYPE_ENUM:
                assert spec.enum == {v.number for v in field.enum_type.values}
            else:
                assert spec.enum is None
    assert set(schema.fields) <= {f.number for f in descriptor.fields}


def test_schema_is_the_protos() -> None:
    _check_schema(wire.request_schema()[0], rpc_pb2.criu_req.DESCRIPTOR)


# -- hand-made cases ------------------------------------------------------------------------


def _v(value: int) -> bytes:
    return protowire.encode_varint(value & protowire.MASK64)


def _key(number: int, wire_type: int) -> bytes:
    return _v(number << 3 | wire_type)


def _ld(number: int, payload: bytes) -> bytes:
    return protowire.length_delimited_field(number, payload)


def _vi(number: int, value: int) -> bytes:
    return _key(number, 0) + _v(value)


def _inherit(key: bytes, fd: int) -> bytes:
    return _ld(27, _ld(1, key) + _vi(2, fd))


RESTORE = _vi(1, wire.RESTORE)


def test_two_opts_merge_and_the_first_ones_inherit_fd_counts() -> None:
    """Issue 11, attack 5: the clean second opts does not hide the first's inherit_fd."""
    data = RESTORE + _ld(2, _vi(1, 5) + _inherit(b"fd[1]", 999)) + _ld(2, _vi(1, 5))
    assert _compare(data) == "accepted by both, opts merged"
    req = wire.parse_request(data)
    assert req.inherit_fd_keys == ("fd[1]",)
    assert req.images_dir_fd == 5


def test_split_opts_and_ps_merge_field_by_field() -> None:
    data = (
        _ld(2, _vi(1, 7) + _ld(11, _vi(4, 3)) + _inherit(b"a", 1))
        + RESTORE
        + _ld(2, _ld(11, _vi(2, 80)) + _vi(26, 0) + _inherit(b"b", 2) + _vi(1, 7))
        + _ld(2, _ld(68, b"/x") + _vi(1, 7) + _vi(17, -1))
    )
    assert _compare(data) == "accepted by both, opts merged"
    req = wire.parse_request(data)
    assert (req.page_server_fd, req.rst_sibling, req.inherit_fd_keys) == (3, False, ("a", "b"))
    assert (req.images_dir, req.work_dir_fd) == ("/x", -1)


def test_unknown_fields_and_known_fields_of_another_wire_type_are_stepped_over() -> None:
    data = (
        RESTORE
        + _key(99, 3)
        + _vi(1, 7)
        + _key(99, 4)  # a group holding a field
        + _ld(2, _vi(1, 4) + _key(17, 2) + b"\x01\x09" + _key(11, 0) + b"\x05")
        + _ld(1, b"x")  # type as bytes: an unknown field, the varint one stays
    )
    assert _compare(data) == "accepted by both, one opts"
    assert wire.parse_request(data).work_dir_fd is None


AMBIGUOUS = [
    # CRIU's protobuf-c reads a bool from any wire type; protobuf ignores it.
    ("opts.rst_sibling", RESTORE + _ld(2, _vi(1, 5) + _ld(26, b"\x01"))),
    ("opts.rst_sibling", RESTORE + _ld(2, _vi(1, 5) + _key(26, 5) + b"\x01\x00\x00\x00")),
    # (the length byte counts: b"\x00" is true for protobuf-c)
    (
        "opts.rst_sibling",
        RESTORE + _ld(2, _vi(1, 5) + _vi(26, 0)) + _ld(2, _vi(1, 5) + _ld(26, b"\0")),
    ),
    ("keep_open", _vi(1, wire.VERSION) + _key(4, 1) + b"\x00" * 7 + b"\x01"),
    # ... and every bit of a 10-byte varint; protobuf drops those past 64.
    ("keep_open", _vi(1, wire.VERSION) + _key(4, 0) + b"\x80" * 9 + b"\x02"),
    # A type outside the enum: protobuf keeps the earlier one, CRIU takes it.
    ("type", RESTORE + _vi(1, 99)),
    # A later opts without the required images_dir_fd: CRIU takes its default.
    ("opts.images_dir_fd", RESTORE + _ld(2, _vi(1, 5)) + _ld(2, _ld(68, b"/x"))),
    # A NUL ends CRIU's C string.
    ("opts.images_dir", RESTORE + _ld(2, _vi(1, -1) + _ld(68, b"/x\0/y"))),
    ("opts.config_file", RESTORE + _ld(2, _vi(1, -1) + _ld(51, b"\0"))),
    (
        "opts.inherit_fd[1].key",
        RESTORE + _ld(2, _vi(1, 5) + _inherit(b"a", 1) + _inherit(b"\0", 2)),
    ),
]


@pytest.mark.parametrize(("field", "data"), AMBIGUOUS, ids=[a[0] for a in AMBIGUOUS])
def test_what_criu_reads_otherwise_is_refused(field: str, data: bytes) -> None:
    with pytest.raises(AmbiguousRequest) as err:
        wire.parse_request(data)
    assert err.value.field == field
    assert _compare(data).startswith("refused as ambiguous")
    if field in ("type", "keep_open"):
        with pytest.raises(AmbiguousRequest):
            wire.read_head(data)


def test_what_both_parsers_read_alike_is_not_refused() -> None:
    agreed = [
        RESTORE + _ld(2, _ld(26, b"\x01") + _vi(1, 5) + _vi(26, 1)),  # a later varint decides
        RESTORE + _ld(2, _vi(1, 5) + _vi(26, 0)) + _ld(2, _vi(1, 5) + _ld(26, b"")),  # false too
        RESTORE + _ld(2, _vi(1, 5) + _vi(26, 1)) + _ld(2, _vi(1, 5)),  # optional: merged
        _vi(1, 99) + RESTORE,  # the last type decides, for both
        RESTORE + _ld(2, _vi(1, 5) + _ld(68, b"/x\0")) + _ld(2, _vi(1, 5) + _ld(68, b"/y")),
        RESTORE + _ld(2, _vi(1, 5)) + _ld(2, _vi(1, 6)),
    ]
    for data in agreed:
        assert _compare(data).startswith("accepted by both")


# -- fuzzed datagrams -------------------------------------------------------------------------

_INT32 = st.integers(-(2**31), 2**31 - 1)
_TEXTS = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


def _scalar_value(field: FieldDescriptor) -> st.SearchStrategy[object]:
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in list(field.enum_type.values)])
    if t == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=12)
    if t == FieldDescriptor.TYPE_UINT32:
        return st.integers(0, 2**32 - 1)
    return _INT32


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A random, possibly partial message of the generated class of *descriptor*."""
    msg = message_factory.GetMessageClass(descriptor)()
    fields = draw(
        st.lists(
            st.sampled_from(list(descriptor.fields)),
            max_size=6 if depth else 4,
            unique_by=lambda f: f.number,
        )
    )
    for field in fields:
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 1:
                continue
            items = draw(st.lists(_message(field.message_type, depth + 1), min_size=1, max_size=2))
            if repeated:
                getattr(msg, field.name).extend(items)
            else:
                getattr(msg, field.name).MergeFrom(items[0])
        elif repeated:
            getattr(msg, field.name).extend(draw(st.lists(_scalar_value(field), max_size=2)))
        else:
            setattr(msg, field.name, draw(_scalar_value(field)))
    return msg


def _bool_field(number: int) -> st.SearchStrategy[bytes]:
    """A bool as writers send it, mostly, and as no writer should."""
    odd = st.one_of(
        st.sampled_from([2, 2**63]).map(lambda v: _vi(number, v)),
        st.just(_key(number, 0) + b"\x80" * 9 + b"\x02"),  # only past bit 64
        st.binary(max_size=2).map(lambda b: _ld(number, b)),
        st.binary(min_size=4, max_size=4).map(lambda b: _key(number, 5) + b),
        st.just(_key(number, 3) + _key(number, 4)),
    )
    usual = st.booleans().map(lambda v: _vi(number, v))
    return st.one_of(usual, usual, usual, odd)


def _varint_field(number: int, values: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        values.map(lambda v: _vi(number, v)),
        values.map(lambda v: _key(number, 0) + _v(v + (7 << 60))),  # bits past 32
        values.map(lambda v: _key(number, 0) + bytes([v & 0x7F | 0x80]) + b"\x80" * 8 + b"\x00"),
        st.binary(max_size=3).map(lambda b: _ld(number, b)),  # another wire type
    )


def _unknown_field(numbers: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.tuples(numbers, st.integers(0, 2**64 - 1)).map(lambda t: _vi(*t)),
        st.tuples(numbers, st.binary(max_size=4)).map(lambda t: _ld(*t)),
        numbers.map(lambda n: _key(n, 1) + b"\x01" * 8),
        numbers.map(lambda n: _key(n, 5) + b"\x01" * 4),
        st.tuples(numbers, st.binary(max_size=3)).map(
            lambda t: _key(t[0], 3) + _vi(1, len(t[1])) + _ld(2, t[1]) + _key(t[0], 4)
        ),
    )


_TEXT_BYTES = st.one_of(
    st.text(max_size=8).map(lambda s: s.encode()),
    st.binary(max_size=6),
    st.sampled_from([b"", b"\0", b"a\0b", b"\xff"]),
)
_FD = st.one_of(st.sampled_from([-1, 0, 3, 5, 999, 2**31 - 1, -(2**31)]), _INT32)


def _body(*fields: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A submessage's bytes: up to three of *fields*, in any order."""
    return st.lists(st.one_of(*fields), max_size=3).map(b"".join)


_PS_BODY = _body(
    _varint_field(4, _FD),
    _varint_field(2, _INT32),
    _TEXT_BYTES.map(lambda b: _ld(1, b)),
    _unknown_field(st.integers(5, 40)),
)
_INHERIT_BODY = _body(
    _TEXT_BYTES.map(lambda b: _ld(1, b)),
    _varint_field(2, _FD),
    _unknown_field(st.integers(3, 9)),
)
_REQUIRED_PAIR = _body(  # veths, ext_mnt, cg_root, unix_sk_ino, join_ns
    _TEXT_BYTES.map(lambda b: _ld(1, b)),
    _TEXT_BYTES.map(lambda b: _ld(2, b)),
    st.integers(0, 2**33).map(lambda v: _vi(1, v)),
)

_OPTS_FIELD = st.one_of(
    _varint_field(1, _FD),  # images_dir_fd
    _varint_field(17, _FD),  # work_dir_fd
    _varint_field(49, _FD),  # status_fd
    _bool_field(26),  # rst_sibling
    st.sampled_from([68, 51, 10]).flatmap(lambda n: _TEXT_BYTES.map(lambda b: _ld(n, b))),
    _INHERIT_BODY.map(lambda b: _ld(27, b)),
    _PS_BODY.map(lambda b: _ld(11, b)),
    st.tuples(st.sampled_from([19, 23, 25, 33, 39]), _REQUIRED_PAIR).map(lambda t: _ld(*t)),
    _message(rpc_pb2.criu_opts.DESCRIPTOR, 1).map(lambda m: m.SerializePartialToString()),
    _unknown_field(st.integers(72, 2**29 - 1)),
    st.sampled_from([3, 9, 34, 64]).flatmap(lambda n: _varint_field(n, st.integers(-1, 9))),
)

_OPTS_BODY = st.lists(_OPTS_FIELD, max_size=5).map(b"".join)

# Fields a well-behaved client sends, for opts that protobuf accepts.
_CLEAN_OPTS_FIELD = st.one_of(
    st.sampled_from([1, 17, 49]).flatmap(lambda n: _FD.map(lambda v: _vi(n, v))),
    st.booleans().map(lambda v: _vi(26, v)),
    st.sampled_from([68, 51, 10]).flatmap(
        lambda n: st.text(max_size=8).map(lambda t: _ld(n, t.replace("\0", "").encode()))
    ),
    st.tuples(st.text(max_size=6), _FD).map(
        lambda t: _inherit(t[0].replace("\0", "").encode(), t[1])
    ),
    _PS_BODY.map(lambda b: _ld(11, b)),
    _unknown_field(st.integers(72, 300)),
)
_CLEAN_OPTS = st.tuples(_FD, st.lists(_CLEAN_OPTS_FIELD, max_size=4)).map(
    lambda t: _ld(2, _vi(1, t[0]) + b"".join(t[1]))
)

_GOOD_TYPE = st.sampled_from(sorted(wire.TYPE_NAMES)).map(lambda t: _vi(1, t))
_OPTS = st.one_of(
    _OPTS_BODY.map(lambda b: _ld(2, _vi(1, 5) + b)),  # its required field first
    _OPTS_BODY.map(lambda b: _ld(2, b + _vi(1, 6))),  # ... or last
    _OPTS_BODY.map(lambda b: _ld(2, b)),
)
_TOP_FIELD = st.one_of(
    _GOOD_TYPE,
    _varint_field(1, st.integers(-2, 20)),
    _OPTS,
    _OPTS,
    _OPTS,
    _bool_field(4),  # keep_open
    _bool_field(3),  # notify_success
    st.lists(_bool_field(1), max_size=2).map(lambda f: _ld(5, b"".join(f))),  # features
    _message(rpc_pb2.criu_req.DESCRIPTOR).map(lambda m: m.SerializePartialToString()),
    _unknown_field(st.integers(7, 2**29 - 1)),
)


@st.composite
def _datagram(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(_TOP_FIELD, max_size=5))
    # (hypothesis draws small numbers more often than large ones)
    if draw(st.integers(0, 9)) != 9:
        fields.insert(draw(st.integers(0, len(fields))), draw(_GOOD_TYPE))
    if draw(st.integers(0, 4)) != 4:
        for opts in draw(st.lists(_CLEAN_OPTS, min_size=1, max_size=3)):
            fields.insert(draw(st.integers(0, len(fields))), opts)
    data = bytearray(b"".join(fields))
    damage = draw(st.sampled_from(["none"] * 5 + ["flip", "insert", "cut"]))
    if damage == "flip" and data:
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= draw(st.integers(1, 255))
    elif damage == "insert":
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    elif damage == "cut" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


_seen: Counter[str] = Counter()


@pytest.mark.fuzz
@given(_datagram())
def test_fuzzed_datagrams_read_alike(data: bytes) -> None:
    outcome = _compare(data)
    event(outcome)
    _seen[outcome] += 1


@pytest.mark.fuzz
def test_the_fuzzer_reached_every_outcome() -> None:
    """Run after the fuzz test above (same module): it must have met each case."""
    if not _seen or settings.get_current_profile_name() != "fuzz":
        pytest.skip("needs test_fuzzed_datagrams_read_alike under the fuzz profile first")
    wanted = {
        "accepted by both, one opts",
        "accepted by both, opts merged",
        "accepted by both",
        "refused by both",
        "refused as ambiguous: opts.rst_sibling",
        "refused as ambiguous: keep_open",
        "refused as ambiguous: opts.images_dir_fd",
    }
    assert wanted <= set(_seen), _seen
