"""Reading the top level of a criu_req datagram without protobuf.

The pass-through path (every request but RESTORE and CHECK) must cost almost
nothing, so it must not import protobuf (about 15 ms and 4 MB here). A criu_req
is a proto2 message: a sequence of (tag varint, value) pairs where the tag is
``field_number << 3 | wire_type``; the request type is field 1 (varint) and
keep_open field 4 (varint). Grammar of what we walk::

    message  := { field }
    field    := tag:varint value
    value    := varint            (wire type 0)
              | 8 bytes           (wire type 1)
              | len:varint bytes  (wire type 2)
              | 4 bytes           (wire type 5)

Wire types 3 and 4 (groups) never occur in CRIU's messages and are rejected.
When a field repeats, the last value wins, as in every protobuf parser.
"""

from __future__ import annotations

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.rpc.values import Value

# criu_req_type values (protos/criu_aio_rpc.proto, from CRIU's rpc.proto).
EMPTY = 0
DUMP = 1
RESTORE = 2
CHECK = 3
PRE_DUMP = 4
PAGE_SERVER = 5
NOTIFY = 6
CPUINFO_DUMP = 7
CPUINFO_CHECK = 8
FEATURE_CHECK = 9
VERSION = 10
WAIT_PID = 11
PAGE_SERVER_CHLD = 12
SINGLE_PRE_DUMP = 13

TYPE_NAMES = {
    EMPTY: "EMPTY",
    DUMP: "DUMP",
    RESTORE: "RESTORE",
    CHECK: "CHECK",
    PRE_DUMP: "PRE_DUMP",
    PAGE_SERVER: "PAGE_SERVER",
    NOTIFY: "NOTIFY",
    CPUINFO_DUMP: "CPUINFO_DUMP",
    CPUINFO_CHECK: "CPUINFO_CHECK",
    FEATURE_CHECK: "FEATURE_CHECK",
    VERSION: "VERSION",
    WAIT_PID: "WAIT_PID",
    PAGE_SERVER_CHLD: "PAGE_SERVER_CHLD",
    SINGLE_PRE_DUMP: "SINGLE_PRE_DUMP",
}

_FIELD_TYPE = 1
_FIELD_KEEP_OPEN = 4
_MAX_VARINT_BYTES = 10


def type_name(req_type: int) -> str:
    return TYPE_NAMES.get(req_type, f"unknown type {req_type}")


class RequestHead(Value):
    """What the top level of a criu_req says, read without protobuf."""

    __slots__ = ("keep_open", "req_type", "size")
    req_type: int
    keep_open: bool
    size: int

    def __init__(self, req_type: int, keep_open: bool, size: int) -> None:
        self._freeze(req_type=req_type, keep_open=keep_open, size=size)

    @property
    def name(self) -> str:
        return type_name(self.req_type)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at *pos*; return (value, position after it)."""
    result = 0
    shift = 0
    end = min(len(data), pos + _MAX_VARINT_BYTES)
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ClientError(f"criu_req: varint at offset {pos} runs past the datagram or 10 bytes")


def read_head(data: bytes) -> RequestHead:
    """Walk the top-level fields of a criu_req datagram; raise ClientError if malformed.

    Nested messages (opts, features) are skipped, not checked: CRIU parses them
    itself after the hand-over and answers a malformed one the way it always does.
    """
    pos = 0
    req_type: int | None = None
    keep_open = False
    size = len(data)
    while pos < size:
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise ClientError(f"criu_req: field number 0 at offset {pos}")
        if wire_type == 0:
            value, pos = _varint(data, pos)
            if field == _FIELD_TYPE:
                req_type = value & 0xFFFFFFFF  # an enum is an int32 on the wire
            elif field == _FIELD_KEEP_OPEN:
                keep_open = value != 0
            continue
        if wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            pos += length
        else:
            raise ClientError(f"criu_req: unsupported wire type {wire_type} for field {field}")
        if pos > size:
            raise ClientError(f"criu_req: field {field} runs past the {size}-byte datagram")
    if req_type is None:
        raise ClientError("criu_req: the required field `type` (1) is missing")
    return RequestHead(req_type=req_type, keep_open=keep_open, size=size)


def _put_varint(out: bytearray, value: int) -> None:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int32 values take ten bytes, as protobuf does
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def encode_error_resp(req_type: int, errno: int, errmsg: str) -> bytes:
    """A criu_resp{type, success=false, cr_errno, cr_errmsg} without protobuf.

    Used for refusals, including those of the service for datagrams too
    malformed to parse; fields 1, 2, 7 and 9 of criu_resp.
    """
    out = bytearray()
    out.append(1 << 3)
    _put_varint(out, req_type)
    out.append(2 << 3)
    out.append(0)
    if errno:
        out.append(7 << 3)
        _put_varint(out, errno)
    msg = errmsg.encode("utf-8", "replace")
    out.append(9 << 3 | 2)
    _put_varint(out, len(msg))
    out += msg
    return bytes(out)
