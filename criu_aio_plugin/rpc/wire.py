"""criu_req and criu_resp on the wire, without protobuf.

The pass-through path (every request but RESTORE and CHECK) must cost almost
nothing, so it must not import protobuf (about 15 ms and 4 MB here). A
criu_req (protos/criu_aio_rpc.proto, from CRIU's rpc.proto) is decoded by
``criu_aio_plugin.protowire``, with the protobuf runtime's rules and merge
semantics: a repeated occurrence of a singular message field (``opts``,
``opts.ps``) merges into the earlier one, repeated fields (``inherit_fd``)
append, the last scalar wins, unknown fields are stepped over. A datagram
holding two ``opts`` is read as one merged ``opts``, the way CRIU reads it:
protobuf-c's unpack merges a repeated occurrence of a non-repeated submessage
into the earlier one, recursively, and concatenates repeated fields, earlier
first (protobuf-c/protobuf-c.c v1.5.1, the libprotobuf-c1 CRIU 4.1.1 runs
with: parse_required_member, case PROTOBUF_C_TYPE_MESSAGE, calls
merge_messages, whose comment reads "For embedded message fields, the parser
merges multiple instances of the same field"). ``RpcRequest`` is the request
CRIU acts on; tests/unit/test_rpc_wire_merge.py holds ``parse_request`` to the
runtime (``criu_req().MergeFromString``) on fuzzed datagrams, and
tests/e2e/test_wire_criu.py shows the real CRIU reading them alike.

Where protobuf-c reads a field ``RpcRequest`` exposes otherwise than the
runtime, the request is refused (``AmbiguousRequest``) rather than guessed at
(protobuf-c.c v1.5.1, each seen with CRIU 4.1.1):

- a bool (``keep_open``, ``opts.rst_sibling``): protobuf-c reads one from
  whatever bytes follow its key, of any wire type (parse_required_member,
  case PROTOBUF_C_TYPE_BOOL, checks no wire type; parse_boolean tests every
  byte, the 10th's bits past 64 included); the runtime takes a bool of
  another wire type for an unknown field and drops bits past 64. A service
  screening ``rst_sibling`` would pass one CRIU then acts on;
- ``type``: protobuf-c keeps any value (CRIU answers "Invalid req" to one it
  does not know); the runtime takes a value outside criu_req_type for an
  unknown field and keeps the earlier type;
- ``opts.images_dir_fd`` is required with a default (-1): protobuf-c does not
  merge required fields (merge_messages handles repeated and optional ones
  only), so an ``opts`` lacking it after one holding it leaves CRIU with -1;
  the runtime keeps the earlier value;
- a string (``images_dir``, ``config_file``, ``log_file``, an inherit_fd
  key) holding a NUL byte: CRIU uses protobuf-c's NUL-terminated copy as a C
  string, which ends at the first NUL.

Elsewhere the two differ only in what they refuse, and that is harmless:
protobuf-c refuses a known field of another wire type, any group, and an
``opts`` occurrence lacking a required field of a submessage; the runtime
refuses a key past 32 bits (protobuf-c drops the high bits), field number 0
written in several bytes, and a missing images_dir_fd (protobuf-c takes the
default). A request CRIU refuses is one it does not act on; one criu-aio
refuses never reaches CRIU from the service.
"""

from __future__ import annotations

from criu_aio_plugin import protowire
from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.protowire import (
    BYTES,
    MESSAGE,
    REPEATED,
    SCALAR,
    Fields,
    Message,
    Spec,
    WireError,
    int32,
)
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


def type_name(req_type: int) -> str:
    return TYPE_NAMES.get(req_type, f"unknown type {req_type}")


# --- what protowire keeps of a criu_req ------------------------------------------
#
# Every message-typed field (the runtime validates their content) and every
# required field of criu_req and its submessages, and the fields RpcRequest
# exposes. Other scalar fields are stepped over like unknown ones, which
# changes nothing the runtime accepts or refuses. test_rpc_wire_merge.py holds
# this table to the generated descriptors.

_TYPE, _OPTS, _KEEP_OPEN, _FEATURES = 1, 2, 4, 5
_OPT_IMAGES_DIR_FD = 1
_OPT_LOG_FILE = 10
_OPT_PS = 11
_OPT_WORK_DIR_FD = 17
_OPT_RST_SIBLING = 26
_OPT_INHERIT_FD = 27
_OPT_STATUS_FD = 49
_OPT_CONFIG_FILE = 51
_OPT_IMAGES_DIR = 68
_OPT_LOG_TO_STDERR = 71
_PS_FD = 4  # criu_page_server_info.fd
_INHERIT_KEY, _INHERIT_FD = 1, 2  # inherit_fd.key, inherit_fd.fd


def _required(name: str, fields: dict[int, Spec]) -> Message:
    """A message all of whose listed fields are required."""
    return Message(name, fields, tuple(fields))


_TYPE_SPEC = Spec("type", SCALAR, enum=frozenset(TYPE_NAMES))
_KEEP_OPEN_SPEC = Spec("keep_open", SCALAR)


def _build_schema() -> tuple[Message, Message]:
    """criu_req and criu_opts as the decoder reads them (built on first use: a
    pass-through only reads the top level, ``_CRIU_REQ_HEAD``)."""
    opts = Message(
        "criu_opts",
        {
            _OPT_IMAGES_DIR_FD: Spec("images_dir_fd", SCALAR),
            _OPT_LOG_FILE: Spec("log_file", BYTES),
            _OPT_PS: Spec(
                "ps",
                MESSAGE,
                message=Message("criu_page_server_info", {_PS_FD: Spec("fd", SCALAR)}),
            ),
            _OPT_WORK_DIR_FD: Spec("work_dir_fd", SCALAR),
            19: Spec(
                "veths",
                REPEATED,
                message=_required(
                    "criu_veth_pair", {1: Spec("if_in", BYTES), 2: Spec("if_out", BYTES)}
                ),
            ),
            23: Spec(
                "ext_mnt",
                REPEATED,
                message=_required("ext_mount_map", {1: Spec("key", BYTES), 2: Spec("val", BYTES)}),
            ),
            25: Spec(
                "cg_root", REPEATED, message=_required("cgroup_root", {2: Spec("path", BYTES)})
            ),
            _OPT_RST_SIBLING: Spec("rst_sibling", SCALAR),
            _OPT_INHERIT_FD: Spec(
                "inherit_fd",
                REPEATED,
                message=_required(
                    "inherit_fd",
                    {_INHERIT_KEY: Spec("key", BYTES), _INHERIT_FD: Spec("fd", SCALAR)},
                ),
            ),
            33: Spec(
                "unix_sk_ino", REPEATED, message=_required("unix_sk", {1: Spec("inode", SCALAR)})
            ),
            39: Spec(
                "join_ns",
                REPEATED,
                message=_required(
                    "join_namespace", {1: Spec("ns", BYTES), 2: Spec("ns_file", BYTES)}
                ),
            ),
            _OPT_STATUS_FD: Spec("status_fd", SCALAR),
            _OPT_CONFIG_FILE: Spec("config_file", BYTES),
            _OPT_IMAGES_DIR: Spec("images_dir", BYTES),
            _OPT_LOG_TO_STDERR: Spec("log_to_stderr", SCALAR),
        },
        (_OPT_IMAGES_DIR_FD,),
    )

    req = Message(
        "criu_req",
        {
            _TYPE: _TYPE_SPEC,
            _OPTS: Spec("opts", MESSAGE, message=opts),
            _KEEP_OPEN: _KEEP_OPEN_SPEC,
            _FEATURES: Spec("features", MESSAGE, message=Message("criu_features", {})),
        },
        (_TYPE,),
    )
    return req, opts


_SCHEMA: tuple[Message, Message] | None = None


def request_schema() -> tuple[Message, Message]:
    """(criu_req, criu_opts): the schema ``parse_request`` decodes with."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = _build_schema()
    return _SCHEMA


# The top level alone, for the first look at every datagram (``read_head``):
# submessages are stepped over, not checked.
_CRIU_REQ_HEAD = Message("criu_req", {_TYPE: _TYPE_SPEC, _KEEP_OPEN: _KEEP_OPEN_SPEC}, (_TYPE,))

# The strings RpcRequest exposes, by criu_opts field number.
_OPT_TEXTS = (_OPT_IMAGES_DIR, _OPT_CONFIG_FILE, _OPT_LOG_FILE)


class AmbiguousRequest(ClientError):
    """A datagram CRIU's parser (protobuf-c) would read otherwise than protobuf,
    on ``field`` (module docstring): refused, never guessed at."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"criu_req: {field} {why}: CRIU would read it otherwise than protobuf")
        self.field = field


# --- the first look ------------------------------------------------------------------


class RequestHead(Value):
    """What the top level of a criu_req says, read without protobuf."""

    req_type: int
    keep_open: bool
    size: int

    @property
    def name(self) -> str:
        return type_name(self.req_type)


def read_head(data: bytes) -> RequestHead:
    """The type and keep_open of a criu_req datagram; ClientError if malformed.

    Submessages (opts, features) are stepped over, not checked: CRIU parses
    them itself after the hand-over and answers a malformed one the way it
    always does. The checks of the top level are ``parse_request``'s.
    """
    req = _decode(data, _CRIU_REQ_HEAD)
    _check_top(data, protowire.walk(data), req)
    return RequestHead(int32(req.scalar(_TYPE) or 0), bool(req.scalar(_KEEP_OPEN)), len(data))


# --- the whole request ------------------------------------------------------------------


class RpcRequest(Value):
    """The parts of a criu_req the interposer decides on (``parse_request``), as
    CRIU reads them: after merging every occurrence of ``opts`` and ``opts.ps``.

    ``images_dir_fd`` is -1 when absent (the proto default, which CRIU reads as
    "use images_dir"); ``rst_sibling`` and the fds are None when unset.
    Strings are decoded from UTF-8 with surrogateescape (proto2 strings are not
    checked by either parser), so ``os.fsencode`` gives back their bytes.
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
    log_to_stderr: bool = False


def parse_request(data: bytes) -> RpcRequest:
    """Parse the criu_req fields ``RpcRequest`` holds, as CRIU will read them.

    Raises ClientError where protobuf's parse fails or leaves a required field
    unset (IsInitialized), and ``AmbiguousRequest`` where CRIU's parser would
    read one of these fields otherwise (module docstring).
    """
    req = _decode(data, request_schema()[0])
    top = protowire.walk(data)
    _check_top(data, top, req)
    keep_open = bool(req.scalar(_KEEP_OPEN))
    opts = req.message(_OPTS)
    if opts is None:
        return RpcRequest(int32(req.scalar(_TYPE) or 0), keep_open=keep_open)
    _check_opts(data, top, opts)
    ps = opts.message(_OPT_PS)
    rst_sibling = opts.scalar(_OPT_RST_SIBLING)
    return RpcRequest(
        req_type=int32(req.scalar(_TYPE) or 0),
        has_opts=True,
        images_dir_fd=int32(opts.scalar(_OPT_IMAGES_DIR_FD) or 0),
        images_dir=_text(opts.data(_OPT_IMAGES_DIR)),
        work_dir_fd=_opt_int32(opts.scalar(_OPT_WORK_DIR_FD)),
        rst_sibling=None if rst_sibling is None else rst_sibling != 0,
        inherit_fd_keys=tuple(
            _text(item.data(_INHERIT_KEY)) or "" for item in opts.messages(_OPT_INHERIT_FD)
        ),
        page_server_fd=None if ps is None else _opt_int32(ps.scalar(_PS_FD)),
        status_fd=_opt_int32(opts.scalar(_OPT_STATUS_FD)),
        config_file=_text(opts.data(_OPT_CONFIG_FILE)),
        keep_open=keep_open,
        log_file=_text(opts.data(_OPT_LOG_FILE)),
        log_to_stderr=bool(opts.scalar(_OPT_LOG_TO_STDERR)),
    )


def _opt_int32(value: int | None) -> int | None:
    return None if value is None else int32(value)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _decode(data: bytes, schema: Message) -> Fields:
    """The merged message; ClientError where protobuf would refuse it."""
    try:
        req = protowire.decode(data, schema)
    except WireError as err:
        raise ClientError(f"criu_req: {err}") from err
    missing = protowire.missing_required(req, schema)
    if missing:
        raise ClientError(f"criu_req: required field(s) missing: {', '.join(missing)}")
    return req


# --- where CRIU's parser reads otherwise (module docstring) ---------------------------
#
# protobuf-c's reading of the fields where it differs, from the (already
# validated) fields of the datagram; the last occurrence of a field decides.
# None: absent, or an occurrence protobuf-c refuses (then CRIU refuses the
# whole datagram, and nothing is ambiguous).


def _last(fields: list[protowire.Field], number: int) -> protowire.Field | None:
    found = [f for f in fields if f.number == number]
    return found[-1] if found else None


def _criu_bool(data: bytes, field: protowire.Field | None) -> bool | None:
    """protobuf-c's bool: any payload bit of whatever follows the key, of any wire type."""
    if field is None or field.wire_type == protowire.START_GROUP:
        return None
    key_end = protowire.read_key(data, field.start, field.end)[1]
    return any(b & 0x7F for b in data[key_end : field.end])


def _check_bool(name: str, value: int | None, for_criu: bool | None) -> None:
    if for_criu is not None and (value is None or for_criu != (value != 0)):
        here = "unset" if value is None else str(value != 0).lower()
        raise AmbiguousRequest(name, f"is {here} for protobuf, {str(for_criu).lower()} for CRIU")


def _check_top(data: bytes, top: list[protowire.Field], req: Fields) -> None:
    req_type = _last(top, _TYPE)
    if (
        req_type is not None
        and req_type.wire_type == protowire.VARINT
        and int32(req_type.value) not in TYPE_NAMES
    ):
        raise AmbiguousRequest("type", f"ends with the unknown value {int32(req_type.value)}")
    _check_bool("keep_open", req.scalar(_KEEP_OPEN), _criu_bool(data, _last(top, _KEEP_OPEN)))


def _check_opts(data: bytes, top: list[protowire.Field], opts: Fields) -> None:
    each = [
        protowire.walk(data, f.value_start, f.end, protowire.MAX_DEPTH - 1)
        for f in top
        if f.number == _OPTS and f.wire_type == protowire.LENGTH_DELIMITED
    ]
    # protobuf-c merges an optional field (rst_sibling: the last occurrence in
    # any opts decides) but not a required one (images_dir_fd: the last opts).
    rst_sibling = _last([f for fields in each for f in fields], _OPT_RST_SIBLING)
    _check_bool("opts.rst_sibling", opts.scalar(_OPT_RST_SIBLING), _criu_bool(data, rst_sibling))
    fd = _last(each[-1], _OPT_IMAGES_DIR_FD)
    if fd is None or fd.wire_type == protowire.VARINT:
        ours = int32(opts.scalar(_OPT_IMAGES_DIR_FD) or 0)
        for_criu = -1 if fd is None else int32(fd.value)
        if for_criu != ours:
            why = f"is {ours} for protobuf, {for_criu} (the last opts') for CRIU"
            raise AmbiguousRequest("opts.images_dir_fd", why)
    criu_opts = request_schema()[1]
    texts = [(criu_opts.fields[n].name, opts.data(n)) for n in _OPT_TEXTS]
    texts += [
        (f"inherit_fd[{i}].key", item.data(_INHERIT_KEY))
        for i, item in enumerate(opts.messages(_OPT_INHERIT_FD))
    ]
    for name, value in texts:
        if value is not None and 0 in value:
            raise AmbiguousRequest(f"opts.{name}", "holds a NUL byte, where CRIU's C string ends")


# --- answers ---------------------------------------------------------------------------


def encode_error_resp(req_type: int, errno: int, errmsg: str) -> bytes:
    """A criu_resp{type, success=false, cr_errno, cr_errmsg} without protobuf.

    Used for refusals, including those of the service for datagrams too
    malformed to parse; fields 1, 2, 7 and 9 of criu_resp. Negative values
    take ten bytes, as protobuf writes them.
    """
    msg = errmsg.encode("utf-8", "replace")
    out = [protowire.varint_field(1, req_type & protowire.MASK64), protowire.varint_field(2, 0)]
    if errno:
        out.append(protowire.varint_field(7, errno & protowire.MASK64))
    out.append(protowire.length_delimited_field(9, msg))
    return b"".join(out)
