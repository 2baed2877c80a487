"""The protobuf wire format, read and written by hand: criu-aio's one decoder.

Why by hand: importing the protobuf runtime costs about 15 ms, more than a
pass-through ``criu-aio swrk`` may add in all; CRIU's RPC requests and the mm
image are read on that path, so they are read here (foundation layer: this
module imports nothing but ``values``). The runtime stays the reference: the
tests hold every reader built on this module to it, byte for byte
(tests/unit/test_protowire.py, test_mm_wire.py, test_rpc_wire_merge.py).

The grammar::

    message := { field }
    field   := key value                   key = field_number << 3 | wire_type
    value   := varint                      wire type 0
             | 8 bytes                     wire type 1 (fixed64, little-endian)
             | length:varint length bytes  wire type 2 (string, bytes, message)
             | { field } end-group key     wire type 3 (group), closed by wire type 4
             | 4 bytes                     wire type 5 (fixed32, little-endian)

Decoding rules: the protobuf runtime's (upb, protobuf 7.36 in Python),
measured field by field on this build and pinned by the tests:

- a varint has at most 10 bytes; bits past 64 are dropped (a 10th byte of
  0x7f is accepted); int32, uint32 and enum fields keep the low 32 bits;
- a key has at most 5 bytes and fits 32 bits; field number 0 is malformed,
  except inside a group, where the runtime only steps over fields;
- a length has at most 5 bytes and fits 32 bits, and nothing (a length, a
  fixed value, a varint, a group) may run past the message holding it;
- wire types 6 and 7 are malformed, and so is an end-group without its
  start or closing another group's number;
- unknown fields are stepped over, and so must be well formed; a group is
  an unknown field (CRIU's messages have none), stepped over to its end-group;
- a known field arriving with another wire type than its own is an unknown
  field (a repeated scalar field may also come packed);
- a closed (proto2) enum field holding a value outside the enum is an unknown
  field: the field keeps its earlier value, or stays unset;
- submessages and groups nest at most 100 levels below the outermost message
  (the runtime's recursion limit; a submessage and a group each take one);
- merging: a singular scalar field's last occurrence wins; a repeated
  field's occurrences append; a singular message field occurring again is
  merged into the earlier one, field by field, recursively (``decode``);
- a missing required field is not a wire error: ``missing_required`` lists
  them as the runtime's IsInitialized() would refuse them.

CRIU itself parses with protobuf-c, which differs from the runtime on a few
points (see ``criu_aio_plugin.rpc.wire``, where they matter).
"""

from __future__ import annotations

from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5

MAX_DEPTH = 100  # the runtime's default recursion limit
# Field, Spec and Message write their __init__ out: ``values`` would compile one
# on first use (0.05 to 0.1 ms each), on the path of every swrk request.
_set = object.__setattr__
MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


class WireError(ValueError):
    """Malformed wire data; ``offset`` is a position in the decoded buffer."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.reason = message
        self.offset = offset


def int32(value: int) -> int:
    """An int32 (or enum) field's value from its varint: the low 32 bits, signed."""
    value &= MASK32
    return value - (1 << 32) if value & 0x80000000 else value


# --- reading -------------------------------------------------------------------


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at *pos* (at most 10 bytes, bits past 64 dropped); (value, next)."""
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
            return result & MASK64, pos
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
            if result > MASK32:
                raise WireError(f"{what} exceeds 32 bits", start)
            return result, pos
        shift += 7
        if shift >= 35:
            raise WireError(f"{what} longer than 5 bytes", start)


def read_key(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The key of the field at *pos* (``pos < end``), outside a group; (key, next)."""
    b = buf[pos]
    if 8 <= b < 0x80:
        return b, pos + 1
    key, nxt = _short_varint(buf, pos, end, "key")
    if key < 8:
        raise WireError("field number 0", pos)
    return key, nxt


def read_length(buf: bytes, pos: int, end: int, field_start: int) -> tuple[int, int]:
    """Start and end of the length-delimited value whose length is at *pos*."""
    if pos < end and buf[pos] < 0x80:
        length, vstart = buf[pos], pos + 1
    else:
        length, vstart = _short_varint(buf, pos, end, "length")
    if length > end - vstart:
        raise WireError(
            f"field {_number(buf, field_start)}: length {length} runs past the message end",
            field_start,
        )
    return vstart, vstart + length


def _number(buf: bytes, field_start: int) -> int:
    """The field number of the (already read) key at *field_start*, for messages."""
    return _short_varint(buf, field_start, len(buf), "key")[0] >> 3


def skip_value(buf: bytes, key: int, pos: int, end: int, depth: int, field_start: int) -> int:
    """Step over the value of the field whose *key* ends at *pos*; the position after it.

    *depth* is how many levels may still nest below the message holding the
    field (``MAX_DEPTH`` in the outermost one).
    """
    wire_type = key & 7
    if wire_type == VARINT:
        return read_varint(buf, pos, end)[1]
    if wire_type == LENGTH_DELIMITED:
        return read_length(buf, pos, end, field_start)[1]
    if wire_type in (FIXED64, FIXED32):
        size = 8 if wire_type == FIXED64 else 4
        if size > end - pos:
            raise WireError(f"field {key >> 3}: truncated fixed{size * 8}", field_start)
        return pos + size
    if wire_type == START_GROUP:
        return _skip_group(buf, key >> 3, pos, end, depth - 1, field_start)
    if wire_type == END_GROUP:
        raise WireError(f"field {key >> 3}: end-group without its start", field_start)
    raise WireError(f"field {key >> 3}: unsupported wire type {wire_type}", field_start)


def _skip_group(buf: bytes, number: int, pos: int, end: int, depth: int, start: int) -> int:
    if depth < 0:
        raise WireError("groups nested too deep", start)
    while pos < end:
        field_start = pos
        # Inside a group the runtime only steps over fields: field number 0 passes.
        key, pos = _short_varint(buf, pos, end, "key")
        if key & 7 == END_GROUP:
            if key >> 3 != number:
                raise WireError(f"end-group {key >> 3} closes group {number}", field_start)
            return pos
        pos = skip_value(buf, key, pos, end, depth, field_start)
    raise WireError(f"group {number} is not closed", start)


# --- fields of one message -----------------------------------------------------


class Field(Value):
    """One field occurrence: ``buf[start:end]`` is its key and value.

    For a varint field ``value`` is the decoded integer; for a length-delimited
    one ``buf[value_start:end]`` is the payload and ``value`` its length; for a
    fixed one ``value`` is the little-endian integer; for a group
    ``buf[value_start:end]`` runs to the end of its end-group key and
    ``value`` is 0.
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int
    value: int

    def __init__(
        self, number: int, wire_type: int, start: int, value_start: int, end: int, value: int
    ) -> None:
        _set(self, "number", number)
        _set(self, "wire_type", wire_type)
        _set(self, "start", start)
        _set(self, "value_start", value_start)
        _set(self, "end", end)
        _set(self, "value", value)


def _read_field(buf: bytes, pos: int, stop: int, depth: int) -> Field:
    key, vstart = read_key(buf, pos, stop)
    wire_type = key & 7
    if wire_type == VARINT:
        value, end = read_varint(buf, vstart, stop)
    elif wire_type == LENGTH_DELIMITED:
        vstart, end = read_length(buf, vstart, stop, pos)
        value = end - vstart
    else:
        end = skip_value(buf, key, vstart, stop, depth, pos)
        value = int.from_bytes(buf[vstart:end], "little") if wire_type != START_GROUP else 0
    return Field(key >> 3, wire_type, pos, vstart, end, value)


def walk(buf: bytes, start: int = 0, end: int | None = None, depth: int = MAX_DEPTH) -> list[Field]:
    """Every field of the message in ``buf[start:end]``, in order.

    Raises ``WireError`` where the runtime would refuse the message's wire
    format (the module's rules); offsets are positions in ``buf``. *depth*:
    levels left below this message (``MAX_DEPTH - 1`` for a submessage of the
    outermost one).
    """
    stop = len(buf) if end is None else end
    pos = start
    fields: list[Field] = []
    while pos < stop:
        field = _read_field(buf, pos, stop, depth)
        fields.append(field)
        pos = field.end
    return fields


def find(buf: bytes, number: int, depth: int = MAX_DEPTH) -> list[Field]:
    """The occurrences of field *number* among the fields of the message *buf*.

    The same checks as ``walk`` (every field is stepped over and validated),
    but no ``Field`` is built for the others, and one-byte keys and lengths
    take a fast path: an mm_entry is mostly hundreds of small VMA submessages.
    """
    stop = len(buf)
    pos = 0
    found: list[Field] = []
    while pos < stop:
        key = buf[pos]
        if 8 <= key < 0x80:
            vstart = pos + 1
        else:
            key, vstart = read_key(buf, pos, stop)
        wire_type = key & 7
        if wire_type == LENGTH_DELIMITED:
            if vstart < stop and buf[vstart] < 0x80:
                length = buf[vstart]
                vstart += 1
                end = vstart + length
                if end > stop:
                    read_length(buf, vstart - 1, stop, pos)  # raises the precise error
            else:
                vstart, end = read_length(buf, vstart, stop, pos)
            if key >> 3 == number:
                found.append(Field(number, wire_type, pos, vstart, end, end - vstart))
            pos = end
        elif wire_type == VARINT and key >> 3 != number:
            # A varint ends at its first byte below 0x80.
            end = vstart
            while end < stop and buf[end] >= 0x80 and end - vstart < 9:
                end += 1
            if end >= stop or buf[end] >= 0x80:
                read_varint(buf, vstart, stop)  # raises the precise error
            pos = end + 1
        else:
            field = _read_field(buf, pos, stop, depth)
            if field.number == number:
                found.append(field)
            pos = field.end
    return found


# --- merging by a schema ------------------------------------------------------------

# How a field listed in a ``Message`` is kept (``Spec.kind``).
SCALAR = 0  # a varint scalar: int32, uint32, int64, bool, enum; the last one wins
BYTES = 1  # string or bytes; the last one wins
MESSAGE = 2  # a singular submessage; occurrences merge
REPEATED = 3  # a repeated submessage; occurrences append


class Spec(Value):
    """One field of a ``Message``: its name, how it is kept, and what it holds.

    ``enum`` lists a closed enum's values (others make the field unknown);
    ``message`` is a submessage's schema.
    """

    name: str
    kind: int
    enum: frozenset[int] | None = None
    message: Message | None = None

    def __init__(
        self,
        name: str,
        kind: int,
        enum: frozenset[int] | None = None,
        message: Message | None = None,
    ) -> None:
        _set(self, "name", name)
        _set(self, "kind", kind)
        _set(self, "enum", enum)
        _set(self, "message", message)

    @property
    def wire_type(self) -> int:
        return VARINT if self.kind == SCALAR else LENGTH_DELIMITED


class Message(Value):
    """What a decoder keeps of a message type: its name, fields and required fields.

    Fields it does not list are stepped over like unknown fields. For the
    wire format and for ``missing_required`` to agree with the runtime, a
    schema must list every message-typed field (its content is validated)
    and every required field; other scalar fields may be left out.
    """

    name: str
    fields: Mapping[int, Spec]
    required: tuple[int, ...] = ()

    def __init__(
        self, name: str, fields: Mapping[int, Spec], required: tuple[int, ...] = ()
    ) -> None:
        _set(self, "name", name)
        _set(self, "fields", fields)
        _set(self, "required", required)


class Fields(dict[int, object]):
    """A decoded message: field number -> int (SCALAR), bytes (BYTES),
    ``Fields`` (MESSAGE) or a list of ``Fields`` (REPEATED)."""

    def scalar(self, number: int) -> int | None:
        value = self.get(number)
        return value if isinstance(value, int) else None

    def data(self, number: int) -> bytes | None:
        value = self.get(number)
        return value if isinstance(value, bytes) else None

    def message(self, number: int) -> Fields | None:
        value = self.get(number)
        return value if isinstance(value, Fields) else None

    def messages(self, number: int) -> list[Fields]:
        value = self.get(number)
        return value if isinstance(value, list) else []


def decode(buf: bytes, schema: Message) -> Fields:
    """Decode the message *buf* with protobuf's merge semantics (see the module rules).

    Raises ``WireError`` where the runtime's parse raises; required fields are
    not checked here (``missing_required``).
    """
    out = Fields()
    _merge(buf, 0, len(buf), schema, out, MAX_DEPTH)
    return out


def _merge(buf: bytes, pos: int, end: int, schema: Message, out: Fields, depth: int) -> None:
    specs = schema.fields
    while pos < end:
        field_start = pos
        key, pos = read_key(buf, pos, end)
        spec = specs.get(key >> 3)
        if spec is None or key & 7 != spec.wire_type:
            pos = skip_value(buf, key, pos, end, depth, field_start)
            continue
        number = key >> 3
        kind = spec.kind
        if kind == SCALAR:
            value, pos = read_varint(buf, pos, end)
            if spec.enum is None or int32(value) in spec.enum:
                out[number] = value
            continue
        vstart, pos = read_length(buf, pos, end, field_start)
        if kind == BYTES:
            out[number] = buf[vstart:pos]
            continue
        if depth < 1:
            raise WireError("messages nested too deep", field_start)
        sub_schema = spec.message
        assert sub_schema is not None
        if kind == MESSAGE:
            sub = out.get(number)
            if not isinstance(sub, Fields):
                sub = out[number] = Fields()
        else:
            sub = Fields()
            items = out.get(number)
            if not isinstance(items, list):
                items = out[number] = []
            items.append(sub)
        _merge(buf, vstart, pos, sub_schema, sub, depth - 1)


def missing_required(fields: Fields, schema: Message, prefix: str = "") -> list[str]:
    """The required fields *fields* lacks, at every level (``opts.inherit_fd[0].key``)."""
    missing = [f"{prefix}{schema.fields[n].name}" for n in schema.required if n not in fields]
    for number, spec in schema.fields.items():
        if spec.message is None or number not in fields:
            continue
        if spec.kind == MESSAGE:
            sub = fields.message(number)
            assert sub is not None
            missing += missing_required(sub, spec.message, f"{prefix}{spec.name}.")
        else:
            for i, item in enumerate(fields.messages(number)):
                missing += missing_required(item, spec.message, f"{prefix}{spec.name}[{i}].")
    return missing


# --- writing -------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """The minimal varint of *value* (0 <= value < 2**64; a negative int32 is
    sent as ``value & MASK64``, ten bytes, as protobuf does)."""
    if value < 0 or value > MASK64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """Key and value of a varint field."""
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def length_delimited_field(number: int, payload: bytes) -> bytes:
    """Key, length and payload of a length-delimited field."""
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(payload)) + payload
