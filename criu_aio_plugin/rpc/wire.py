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
from criu_aio_plugin.values import Value

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

    req_type: int
    keep_open: bool
    size: int

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


def _fields(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, value, end) of every field in data[start:end].

    For a varint or fixed field, ``value`` is the number; for a length-delimited
    one it is the offset where its bytes start and ``end`` where they stop.
    Raises ClientError on anything a protobuf parser would reject.
    """
    stop = len(data) if end is None else end
    pos = start
    out = []
    while pos < stop:
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise ClientError(f"criu_req: field number 0 at offset {pos}")
        if wire_type == 0:
            value, pos = _varint(data, pos)
            out.append((field, 0, value, pos))
            continue
        if wire_type == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire_type == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire_type == 2:
            length, value = _varint(data, pos)
            pos = value + length
        else:
            raise ClientError(f"criu_req: unsupported wire type {wire_type} for field {field}")
        if pos > stop:
            raise ClientError(f"criu_req: field {field} runs past the {stop}-byte message")
        out.append((field, wire_type, value, pos))
    return out


def read_head(data: bytes) -> RequestHead:
    """Walk the top-level fields of a criu_req datagram; raise ClientError if malformed.

    Nested messages (opts, features) are skipped, not checked: CRIU parses them
    itself after the hand-over and answers a malformed one the way it always does.
    """
    req_type: int | None = None
    keep_open = False
    for field, wire_type, value, _ in _fields(data):
        if wire_type != 0:
            continue
        if field == _FIELD_TYPE:
            req_type = value & 0xFFFFFFFF  # an enum is an int32 on the wire
        elif field == _FIELD_KEEP_OPEN:
            keep_open = value != 0
    if req_type is None:
        raise ClientError("criu_req: the required field `type` (1) is missing")
    return RequestHead(req_type=req_type, keep_open=keep_open, size=len(data))


class RpcRequest(Value):
    """The parts of a criu_req the interposer decides on (``parse_request``).

    ``images_dir_fd`` is -1 when absent (the proto default, which CRIU reads as
    "use images_dir"); ``rst_sibling`` and the fds are None when unset.
    """

    req_type: int
    has_opts: bool = False
    images_dir_fd: int = -1
    images_dir: str | None = None
    work_dir_fd: int | None = None
    rst_sibling: bool | None = None
    inherit_fd_keys: tuple[str, ...] = ()
    page_server_fd: int | None = None
    status_fd: int | None = None
    config_file: str | None = None
    keep_open: bool = False
    log_file: str | None = None


# criu_opts field numbers the interposer reads (protos/criu_aio_rpc.proto).
_OPT_IMAGES_DIR_FD = 1
_OPT_LOG_FILE = 10
_OPT_PS = 11
_OPT_WORK_DIR_FD = 17
_OPT_RST_SIBLING = 26
_OPT_INHERIT_FD = 27
_OPT_STATUS_FD = 49
_OPT_CONFIG_FILE = 51
_OPT_IMAGES_DIR = 68
_PS_FD = 4  # criu_page_server_info.fd
_INHERIT_KEY, _INHERIT_FD = 1, 2  # inherit_fd.key, inherit_fd.fd


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _text(data: bytes, start: int, end: int) -> str:
    # proto2 strings are not checked for UTF-8 by CRIU's protobuf-c; keep any byte
    return data[start:end].decode("utf-8", "surrogateescape")


def _expect(wire_type: int, want: int, name: str) -> None:
    if wire_type != want:
        raise ClientError(f"criu_req: field {name} has wire type {wire_type}, expected {want}")


def parse_request(data: bytes) -> RpcRequest:
    """Parse the criu_req fields ``RpcRequest`` holds, without protobuf.

    Checks what protobuf-c's unpack (CRIU's parser) checks for these fields: the
    wire format, the wire type of each known field, and the required fields
    (criu_req.type, criu_opts.images_dir_fd, inherit_fd.key/fd). Unknown fields
    are skipped, as proto2 parsers do. The last occurrence of a scalar wins.
    """
    req_type: int | None = None
    keep_open = False
    opts: tuple[int, int] | None = None
    for field, wire_type, value, end in _fields(data):
        if field == _FIELD_TYPE:
            _expect(wire_type, 0, "type")
            req_type = value & 0xFFFFFFFF
        elif field == _FIELD_KEEP_OPEN:
            _expect(wire_type, 0, "keep_open")
            keep_open = value != 0
        elif field == 2:
            _expect(wire_type, 2, "opts")
            opts = (value, end)  # (repeated occurrences merge; CRIU sends one)
    if req_type is None:
        raise ClientError("criu_req: the required field `type` (1) is missing")
    if opts is None:
        return RpcRequest(req_type=req_type, keep_open=keep_open)
    found: dict[str, object] = {}
    keys: list[str] = []
    for field, wire_type, value, end in _fields(data, *opts):
        if field in (_OPT_IMAGES_DIR_FD, _OPT_WORK_DIR_FD, _OPT_STATUS_FD, _OPT_RST_SIBLING):
            _expect(wire_type, 0, f"opts.{field}")
            found[str(field)] = value
        elif field in (_OPT_IMAGES_DIR, _OPT_CONFIG_FILE, _OPT_LOG_FILE):
            _expect(wire_type, 2, f"opts.{field}")
            found[str(field)] = _text(data, value, end)
        elif field == _OPT_PS:
            _expect(wire_type, 2, "opts.ps")
            for sub, sub_type, sub_value, _ in _fields(data, value, end):
                if sub == _PS_FD:
                    _expect(sub_type, 0, "opts.ps.fd")
                    found["ps_fd"] = sub_value
        elif field == _OPT_INHERIT_FD:
            _expect(wire_type, 2, "opts.inherit_fd")
            key: str | None = None
            has_fd = False
            for sub, sub_type, sub_value, sub_end in _fields(data, value, end):
                if sub == _INHERIT_KEY:
                    _expect(sub_type, 2, "inherit_fd.key")
                    key = _text(data, sub_value, sub_end)
                elif sub == _INHERIT_FD:
                    _expect(sub_type, 0, "inherit_fd.fd")
                    has_fd = True
            if key is None or not has_fd:
                raise ClientError("criu_req: an inherit_fd lacks its required key or fd")
            keys.append(key)
    if str(_OPT_IMAGES_DIR_FD) not in found:
        raise ClientError("criu_req: opts lacks the required field images_dir_fd (1)")

    def opt_int(field: int) -> int | None:
        value = found.get(str(field))
        return None if value is None else _int32(int(str(value)))

    def opt_str(field: int) -> str | None:
        value = found.get(str(field))
        return None if value is None else str(value)

    images_dir_fd = opt_int(_OPT_IMAGES_DIR_FD)
    rst = found.get(str(_OPT_RST_SIBLING))
    ps_fd = found.get("ps_fd")
    return RpcRequest(
        req_type=req_type,
        has_opts=True,
        images_dir_fd=-1 if images_dir_fd is None else images_dir_fd,
        images_dir=opt_str(_OPT_IMAGES_DIR),
        work_dir_fd=opt_int(_OPT_WORK_DIR_FD),
        rst_sibling=None if rst is None else rst != 0,
        inherit_fd_keys=tuple(keys),
        page_server_fd=None if ps_fd is None else _int32(int(str(ps_fd))),
        status_fd=opt_int(_OPT_STATUS_FD),
        config_file=opt_str(_OPT_CONFIG_FILE),
        keep_open=keep_open,
        log_file=opt_str(_OPT_LOG_FILE),
    )


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
