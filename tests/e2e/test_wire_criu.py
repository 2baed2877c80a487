"""How the real CRIU (protobuf-c) reads a criu_req, beside ``rpc.wire.parse_request``.

Facts rpc/wire.py rests on, seen with the real CRIU over ``criu swrk``:

- repeated ``opts`` merge: an inherit_fd in the first counts though a clean
  second follows (issue 11, attack 5), and ``parse_request`` reports it;
- the required ``images_dir_fd`` does not merge: a later ``opts`` without it
  leaves CRIU with the default -1, so ``parse_request`` refuses the datagram
  (protobuf would keep the earlier value);
- a bool of another wire type, or with only bits past 64 set, is true for
  CRIU and unset or false for protobuf: ``read_head`` and ``parse_request``
  refuse it. keep_open shows it: CRIU keeps the connection for another
  request after a VERSION exactly when it read keep_open as true.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.rpc import wire
from criu_aio_plugin.rpc.wire import AmbiguousRequest

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def _vi(number: int, value: int) -> bytes:
    return protowire.varint_field(number, value & protowire.MASK64)


def _ld(number: int, payload: bytes) -> bytes:
    return protowire.length_delimited_field(number, payload)


class Swrk:
    """One `criu swrk` of the real CRIU, fed raw datagrams."""

    def __init__(self, criu_bin: str) -> None:
        self.sk, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [criu_bin, "swrk", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()

    def ask(self, data: bytes) -> rpc_pb2.criu_resp:
        self.sk.settimeout(60)
        self.sk.send(data)
        resp = rpc_pb2.criu_resp()
        resp.ParseFromString(self.sk.recv(1 << 16))
        return resp

    def kept_open(self) -> bool:
        """Whether CRIU waits for another request (else it closes the socket)."""
        self.sk.settimeout(2)
        try:
            return self.sk.recv(1) != b""
        except TimeoutError:
            return True

    def close(self) -> None:
        self.sk.close()
        self.proc.wait(30)


@pytest.fixture
def swrk(criu_bin: str) -> Iterator[Swrk]:
    s = Swrk(criu_bin)
    yield s
    s.close()


@pytest.fixture
def images_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


CHECK = _vi(1, wire.CHECK)


def test_control_check_with_two_opts_succeeds(swrk: Swrk, images_fd: int) -> None:
    data = CHECK + _ld(2, _vi(1, images_fd)) + _ld(2, _vi(1, images_fd) + _vi(9, 4))
    assert swrk.ask(data).success
    assert wire.parse_request(data).images_dir_fd == images_fd


def test_criu_merges_the_first_opts_inherit_fd(swrk: Swrk, images_fd: int) -> None:
    inherit = _ld(27, _ld(1, b"file[1]") + _vi(2, 999))  # CRIU has no fd 999
    data = CHECK + _ld(2, _vi(1, images_fd) + inherit) + _ld(2, _vi(1, images_fd))
    assert not swrk.ask(data).success  # it tried to use fd 999
    assert wire.parse_request(data).inherit_fd_keys == ("file[1]",)


def test_criu_does_not_merge_images_dir_fd(swrk: Swrk, images_fd: int) -> None:
    data = CHECK + _ld(2, _vi(1, images_fd)) + _ld(2, _vi(9, 4))
    parsed = rpc_pb2.criu_req()
    parsed.MergeFromString(data)
    assert parsed.opts.images_dir_fd == images_fd  # protobuf keeps it ...
    assert not swrk.ask(data).success  # ... CRIU has -1: no images directory
    with pytest.raises(AmbiguousRequest, match="images_dir_fd"):
        wire.parse_request(data)


VERSION = _vi(1, wire.VERSION)
KEEP_OPEN = [
    ("absent", VERSION, False, False),
    ("varint 1", VERSION + _vi(4, 1), True, False),
    ("length-delimited", VERSION + _ld(4, b"\x01"), True, True),
    ("fixed32", VERSION + protowire.encode_varint(4 << 3 | 5) + b"\x01\0\0\0", True, True),
    ("bit 64 alone", VERSION + b"\x20" + b"\x80" * 9 + b"\x02", True, True),
]


@pytest.mark.parametrize(
    ("how", "data", "criu_keeps_open", "refused"), KEEP_OPEN, ids=[k[0] for k in KEEP_OPEN]
)
def test_criu_reads_a_bool_from_any_bytes(
    swrk: Swrk, how: str, data: bytes, criu_keeps_open: bool, refused: bool
) -> None:
    assert swrk.ask(data).success
    assert swrk.kept_open() == criu_keeps_open
    if refused:
        with pytest.raises(AmbiguousRequest, match="keep_open"):
            wire.read_head(data)
    else:
        assert wire.read_head(data).keep_open == criu_keeps_open
