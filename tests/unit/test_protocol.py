"""Pure decisions of the interposer: wire scan, first step, screening, restore/check actions.

Requests are built with our generated protobuf classes and read back both by
the raw scanner (``wire``) and by protobuf, so the two readers are checked
against each other on the same bytes.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from criu_aio_plugin import status
from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.decision.decide import RESTORE, decide
from criu_aio_plugin.decision.model import Judgement, RingVerdict
from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel.interface import HostFacts
from criu_aio_plugin.rpc import protocol, wire
from criu_aio_plugin.rpc.protocol import (
    Answer,
    Examine,
    HandOver,
    ImagesAt,
    RpcRequest,
)

ALL_TYPES = sorted(wire.TYPE_NAMES)


def _new_req(req_type: int, **fields: object) -> rpc_pb2.criu_req:
    return rpc_pb2.criu_req(type=req_type, **fields)  # type: ignore[arg-type]


def _req(req_type: int, **opts: object) -> bytes:
    msg = _new_req(req_type)
    if opts:
        msg.opts.images_dir_fd = -1
        for key, value in opts.items():
            if key == "inherit_fd":
                for k, fd in value:  # type: ignore[attr-defined]
                    msg.opts.inherit_fd.add(key=k, fd=fd)
            elif key == "ps_fd":
                msg.opts.ps.fd = value  # type: ignore[assignment]
            else:
                setattr(msg.opts, key, value)
    return msg.SerializeToString()


def _resp(payload: bytes) -> rpc_pb2.criu_resp:
    resp = rpc_pb2.criu_resp()
    resp.ParseFromString(payload)
    assert resp.IsInitialized()
    return resp


# -- wire: the raw scan agrees with protobuf -------------------------------


@pytest.mark.parametrize("req_type", ALL_TYPES)
@pytest.mark.parametrize("keep_open", [False, True])
def test_head_matches_protobuf(req_type: int, keep_open: bool) -> None:
    msg = _new_req(req_type, keep_open=keep_open, notify_success=True, pid=7)
    msg.opts.images_dir_fd = 5
    msg.opts.images_dir = "x" * 300  # a long field: multi-byte length varint
    msg.features.mem_track = True
    data = msg.SerializeToString()
    head = wire.read_head(data)
    assert head == wire.RequestHead(req_type, keep_open, len(data))
    assert head.name == wire.TYPE_NAMES[req_type]


@given(
    req_type=st.sampled_from(ALL_TYPES),
    images_dir=st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=200),
    fd=st.integers(-(2**31), 2**31 - 1),
    pid=st.integers(0, 2**32 - 1),
)
def test_head_matches_protobuf_property(req_type: int, images_dir: str, fd: int, pid: int) -> None:
    msg = _new_req(req_type, pid=pid)
    msg.opts.images_dir_fd = fd
    msg.opts.images_dir = images_dir
    data = msg.SerializeToString()
    assert wire.read_head(data).req_type == req_type
    assert wire.parse_request(data).images_dir_fd == fd


_INT32 = st.integers(-(2**31), 2**31 - 1)
# Without NUL: a string holding one is refused (CRIU's C string would end there).
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40)


@given(
    req_type=st.sampled_from(ALL_TYPES),
    opts=st.fixed_dictionaries(
        {},
        optional={
            "images_dir": _TEXT,
            "work_dir_fd": _INT32,
            "rst_sibling": st.booleans(),
            "status_fd": _INT32,
            "config_file": _TEXT,
            "log_file": _TEXT,
            "log_level": _INT32,
            "root": _TEXT,
            "shell_job": st.booleans(),
            "external": st.lists(_TEXT, max_size=3),
            "inherit_fd": st.lists(st.tuples(_TEXT, _INT32), max_size=3),
            "ps_fd": _INT32,
        },
    ),
    fd=_INT32,
    keep_open=st.booleans(),
)
def test_raw_parse_equals_protobuf(
    req_type: int, opts: dict[str, object], fd: int, keep_open: bool
) -> None:
    """One request, two readers: our wire parser and protobuf agree field for field."""
    msg = _new_req(req_type, keep_open=keep_open)
    msg.opts.images_dir_fd = fd
    for key, value in opts.items():
        if key == "inherit_fd":
            for k, n in value:  # type: ignore[attr-defined]
                msg.opts.inherit_fd.add(key=k, fd=n)
        elif key == "ps_fd":
            msg.opts.ps.fd = value  # type: ignore[assignment]
        elif key == "external":
            msg.opts.external.extend(value)  # type: ignore[arg-type]
        else:
            setattr(msg.opts, key, value)
    data = msg.SerializeToString()
    o = msg.opts
    assert wire.parse_request(data) == RpcRequest(
        req_type=req_type,
        has_opts=True,
        images_dir_fd=fd,
        images_dir=o.images_dir if o.HasField("images_dir") else None,
        work_dir_fd=o.work_dir_fd if o.HasField("work_dir_fd") else None,
        rst_sibling=o.rst_sibling if o.HasField("rst_sibling") else None,
        inherit_fd_keys=tuple(i.key for i in o.inherit_fd),
        page_server_fd=o.ps.fd if o.HasField("ps") else None,
        status_fd=o.status_fd if o.HasField("status_fd") else None,
        config_file=o.config_file if o.HasField("config_file") else None,
        keep_open=keep_open,
        log_file=o.log_file if o.HasField("log_file") else None,
    )


def test_last_type_wins_like_protobuf() -> None:
    data = _req(wire.VERSION) + _req(wire.RESTORE)
    parsed = rpc_pb2.criu_req()
    parsed.ParseFromString(data)
    assert wire.read_head(data).req_type == parsed.type == wire.RESTORE


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "missing"),
        (b"\x12\x00", "missing"),  # opts only
        (b"\x08", "varint"),  # tag without value
        (b"\x08\xff\xff", "varint"),  # unterminated varint
        (b"\x08\x02\x12\x05ab", "runs past"),  # length beyond the datagram
        (b"\x08\x02\x0b", "not closed"),  # a group never closed
        (b"\x00\x01", "field number 0"),
        (b"\x08" + b"\xff" * 11, "varint"),  # varint longer than 10 bytes
        (b"\x08\x02\x19abc", "truncated fixed64"),
    ],
)
def test_head_rejects_malformed(data: bytes, what: str) -> None:
    with pytest.raises(ClientError, match=what):
        wire.read_head(data)


@pytest.mark.parametrize("req_type", [wire.RESTORE, wire.CHECK, wire.EMPTY])
@pytest.mark.parametrize("err", [0, errno.ERANGE, -1])
def test_error_resp_decodes_with_protobuf(req_type: int, err: int) -> None:
    msg = "criu-aio: ring 0x7f00 in mm-1.img cannot exist here — é"
    resp = _resp(wire.encode_error_resp(req_type, err, msg))
    assert resp.type == req_type
    assert resp.success is False
    assert resp.cr_errmsg == msg
    assert resp.HasField("cr_errno") == bool(err)
    if err:
        assert resp.cr_errno == err


# -- first step ------------------------------------------------------------


@pytest.mark.parametrize("req_type", ALL_TYPES)
def test_first_step_swrk_examines_only_restore_and_check(req_type: int) -> None:
    step = protocol.first_step(wire.read_head(_req(req_type)), "swrk")
    if req_type in (wire.RESTORE, wire.CHECK):
        assert step == Examine(req_type)
    else:
        assert isinstance(step, HandOver)
        assert wire.TYPE_NAMES[req_type] in step.why


@pytest.mark.parametrize("req_type", ALL_TYPES)
def test_first_step_service_examines_everything(req_type: int) -> None:
    assert protocol.first_step(wire.read_head(_req(req_type)), "service") == Examine(req_type)


# -- parse and screen --------------------------------------------------------


def test_parse_request_fields() -> None:
    data = _req(
        wire.RESTORE,
        images_dir_fd=9,
        images_dir="imgs",
        work_dir_fd=4,
        rst_sibling=False,
        inherit_fd=[("pipe:[1]", 5), ("file[2]", 6)],
        ps_fd=11,
        status_fd=12,
        config_file="/etc/c.conf",
        log_file="r.log",
    )
    assert wire.parse_request(data) == RpcRequest(
        req_type=wire.RESTORE,
        has_opts=True,
        images_dir_fd=9,
        images_dir="imgs",
        work_dir_fd=4,
        rst_sibling=False,
        inherit_fd_keys=("pipe:[1]", "file[2]"),
        page_server_fd=11,
        status_fd=12,
        config_file="/etc/c.conf",
        log_file="r.log",
    )
    assert wire.parse_request(_req(wire.VERSION)) == RpcRequest(wire.VERSION)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no type
        b"\x12\x00",  # opts only, no type
        b"\x08\x02\x12\x02\x10\x01",  # opts without images_dir_fd (required)
        b"\x08\x02\x12\x05ab",  # opts longer than the datagram
        b"\xff",  # unterminated tag
        b"\x08\x02\x12\x02\x0a\x00",  # images_dir_fd with a length-delimited wire type
        b"\x08\x02\x12\x05\x08\x01\xda\x01\x00",  # an inherit_fd without key and fd
        b"\x0a\x00",  # type with a length-delimited wire type
    ],
)
def test_parse_request_rejects(data: bytes) -> None:
    with pytest.raises(ClientError):
        wire.parse_request(data)


@pytest.mark.parametrize(
    ("opts", "word"),
    [
        ({"rst_sibling": True}, "rst_sibling"),
        ({"rst_sibling": False}, "rst_sibling"),  # CRIU checks has_rst_sibling
        ({"inherit_fd": [("k", 3)]}, "inherit_fd"),
        ({"ps_fd": 3}, "a page server fd"),
    ],
)
def test_service_refuses_what_criu_service_refuses(opts: dict[str, object], word: str) -> None:
    req = wire.parse_request(_req(wire.RESTORE, **opts))
    assert protocol.screen(req, "swrk") is None
    refusal = protocol.screen(req, "service")
    assert isinstance(refusal, Answer)
    resp = _resp(refusal.payload)
    assert resp.type == wire.RESTORE and not resp.success
    assert resp.cr_errmsg == f"{word} is not allowed in standalone service"


def test_service_lets_plain_requests_through() -> None:
    assert protocol.screen(wire.parse_request(_req(wire.DUMP, pid=5)), "service") is None


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (RpcRequest(wire.RESTORE, True, images_dir_fd=7), ImagesAt(peer_fd=7)),
        (RpcRequest(wire.RESTORE, True, images_dir_fd=7, images_dir="d"), ImagesAt(peer_fd=7)),
        (RpcRequest(wire.RESTORE, True, images_dir="d"), ImagesAt(path="d")),
    ],
)
def test_locate_images_in_criu_order(req: RpcRequest, expected: ImagesAt) -> None:
    assert protocol.locate_images(req) == expected


def test_locate_images_hands_over_when_criu_decides() -> None:
    assert isinstance(protocol.locate_images(RpcRequest(wire.RESTORE)), HandOver)
    with_config = RpcRequest(wire.RESTORE, True, images_dir="d", config_file="/etc/criu/runc.conf")
    assert protocol.locate_images(with_config) == ImagesAt(path="d")  # sets nothing
    moved = protocol.locate_images(with_config, config_sets_images_dir=True)
    assert isinstance(moved, HandOver) and "runc.conf" in moved.why


# -- restore and check actions -------------------------------------------------


def _ring(
    st: status.Status, ring_id: int = 0x7F0000, new: int = 0, reason: str = ""
) -> RingVerdict:
    ring = ImageRing("/ckpt/mm-42.img", 42, ring_id, 127, 8192)
    return RingVerdict(ring, st, new if st.restorable else 0, reason)


def _judged(*rings: RingVerdict, need: int = 0, room: int = 65536) -> Judgement:
    host = HostFacts("6.18", "boot", 4096, 64, 65536, 65536 - room)
    return Judgement("/ckpt", "sim:cpus=64", False, host, rings, need, room)


@pytest.mark.parametrize("live", [True, False])
def test_impossible_ring_refused_with_reason(live: bool) -> None:
    reason = "smallest ring here is 5 pages (64 possible CPUs)"
    judged = _judged(
        _ring(status.REWRITE, 1, 9), _ring(status.IMPOSSIBLE, 0x7F00AA, reason=reason)
    ).replace(live=live)
    action = protocol.refuse(decide(judged, RESTORE))
    assert isinstance(action, Answer) and action.status is status.IMPOSSIBLE
    resp = _resp(action.payload)
    assert resp.type == wire.RESTORE and not resp.success and resp.cr_errno == errno.ERANGE
    for word in (reason, "0x7f00aa", "mm-42.img", "8192 bytes", "before CRIU started"):
        assert word in resp.cr_errmsg


def test_budget_refused_with_numbers() -> None:
    decision = decide(_judged(_ring(status.FINE, new=127), need=70000, room=1000), RESTORE)
    action = protocol.refuse(decision)
    resp = _resp(action.payload)
    assert resp.cr_errno == errno.EAGAIN and action.status is status.BUDGET
    assert "70000" in resp.cr_errmsg and "1000" in resp.cr_errmsg
    assert "fs.aio-max-nr" in resp.cr_errmsg


def test_estimator_error_refused() -> None:
    decision = decide(_judged(_ring(status.ERROR, reason="io_setup: EINVAL")), RESTORE)
    action = protocol.refuse(decision)
    assert _resp(action.payload).cr_errno == errno.EIO
    assert "EINVAL" in action.why and action.status is status.ERROR


def test_rewrite_failure_and_unusable_images() -> None:
    failed = _resp(protocol.rewrite_failed("mm-1.img: No space left", errno.ENOSPC).payload)
    assert failed.cr_errno == errno.ENOSPC and "unchanged" in failed.cr_errmsg
    unusable = _resp(protocol.images_unusable("cannot open", errno.EACCES).payload)
    assert unusable.cr_errno == errno.EACCES and unusable.type == wire.RESTORE


def test_check_action() -> None:
    assert isinstance(protocol.check_action(None), HandOver)
    failed = protocol.check_action("CRIU's formula is wrong for 1-page rings here")
    assert isinstance(failed, Answer)
    resp = _resp(failed.payload)
    assert resp.type == wire.CHECK and not resp.success and "1-page" in resp.cr_errmsg


def test_malformed_answer_is_a_valid_resp() -> None:
    resp = _resp(protocol.malformed("truncated").payload)
    assert resp.type == wire.EMPTY and resp.cr_errno == errno.EBADMSG


def test_values_are_immutable_and_compare_by_fields() -> None:
    a = HandOver("x")
    assert a == HandOver("x") and a != HandOver("y") and hash(a) == hash(HandOver("x"))
    assert "why='x'" in repr(a)
    with pytest.raises(AttributeError):
        a.why = "y"


@pytest.mark.parametrize(
    ("text", "sets"),
    [
        (None, False),  # no file: CRIU ignores a missing RPC config file
        ("", False),
        ("tcp-established\nlog-file /x.log\n", False),
        ("# images-dir /commented\n", False),
        ("images-dir /elsewhere\n", True),
        ("--images-dir=/elsewhere\n", True),
        ("  -D /elsewhere # short option\n", True),
    ],
)
def test_config_file_setting_images_dir(tmp_path: object, text: str | None, sets: bool) -> None:
    import os

    from criu_aio_plugin.rpc.aio_work import config_sets_images_dir

    path = os.path.join(str(tmp_path), "runc.conf")
    if text is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    assert config_sets_images_dir(path) is sets
    assert config_sets_images_dir(None) is False
