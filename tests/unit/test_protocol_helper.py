"""The warm helper's wire (criu-aio swrk <-> criu-aio service): replies both ways."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from criu_aio_plugin.rpc import helper, protocol, wire
from criu_aio_plugin.rpc.protocol import Answer, HandOver


@pytest.mark.parametrize(
    "decision",
    [
        HandOver("2 ring(s) need a new nr_req here: rewrote mm-1.img"),
        protocol.answer(wire.RESTORE, errno.ERANGE, "ring 0x7f00 cannot exist here — é"),
        protocol.rewrite_failed("mm-1.img: Permission denied", errno.EACCES),
    ],
)
def test_reply_round_trip(decision: HandOver | Answer) -> None:
    back = helper.decode_reply(helper.encode_reply(decision))
    if isinstance(decision, HandOver):
        assert back == HandOver(f"criu-aio service: {decision.why}")
    else:
        assert back == decision


@pytest.mark.parametrize(
    "data",
    [b"", b"F", b"Fnot here", b"X", b"A", b"A\x00\x00", b"A" + b"\x00" * 4 + b"\xff\x00\x00\x00ab"],
)
def test_odd_replies_mean_do_it_yourself(data: bytes) -> None:
    assert helper.decode_reply(data) is None


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("", True),
        ("live", True),
        ("sim:cpus=64", True),
        ("sim:v3.10", True),
        ("agent:/bin/sh", False),
    ],
)
def test_kernel_specs_taken_over_the_socket(spec: str, ok: bool) -> None:
    assert helper._allowed_spec(spec) is ok


def test_ask_without_a_service_is_none(tmp_path: object) -> None:
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert helper.ask(os.path.join(str(tmp_path), "none.sock"), fd, "") is None
    finally:
        os.close(fd)


def test_ask_passes_the_descriptor(tmp_path: object) -> None:
    """The request carries MAGIC, the kernel spec and the directory descriptor itself."""
    address = os.path.join(str(tmp_path), "h.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(address)
    server.listen(1)
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # the asking side, as swrk
        code = 1
        try:
            got = helper.ask(address, fd, "sim:cpus=64", timeout=10)
            code = 0 if got == HandOver("criu-aio service: fine") else 1
        finally:
            os._exit(code)
    try:
        conn, _ = server.accept()
        data, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
        assert data == helper.MAGIC + b"sim:cpus=64"
        assert len(fds) == 1 and os.path.samestat(os.fstat(fds[0]), os.fstat(fd))
        conn.send(helper.encode_reply(HandOver("fine")))
        conn.close()
        for received in fds:
            os.close(received)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        server.close()
    assert os.waitstatus_to_exitcode(status) == 0
