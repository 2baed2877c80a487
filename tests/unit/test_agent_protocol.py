"""criu-aio-probe's line protocol, parsed without I/O (agent/PROTOCOL.md)."""

from __future__ import annotations

import errno

import pytest

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.kernel import agent_protocol as proto
from criu_aio_plugin.kernel.interface import HostFacts, RingProbe

FACTS_LINE = (
    "facts release=6.1.0-50-amd64 machine=x86_64 boot_id=22a1d7b8-41da page_size=4096 "
    "possible_cpus=64 aio_nr=12 aio_max_nr=65536 kept=0"
)

# line -> (kind, pairs, text)
REPLIES = [
    ("pong", "pong", {}, ""),
    ("bye", "bye", {}, ""),
    ("released count=30 errno=0", "released", {"count": "30", "errno": "0"}, ""),
    (
        "ring nr_req=1 errno=0 ring_len=4096 nr=127 pages=1 kept=1",
        "ring",
        {"nr_req": "1", "errno": "0", "ring_len": "4096", "nr": "127", "pages": "1", "kept": "1"},
        "",
    ),
    (
        "error errno=22 unknown request bogus",
        "error",
        {"errno": "22"},
        "unknown request bogus",
    ),
    ("  pong  ", "pong", {}, ""),
]


@pytest.mark.parametrize(("line", "kind", "pairs", "text"), REPLIES)
def test_parse_reply(line: str, kind: str, pairs: dict[str, str], text: str) -> None:
    reply = proto.parse_reply(line)
    assert (reply.kind, dict(reply.pairs), reply.text) == (kind, pairs, text)


def test_empty_reply_is_a_protocol_error() -> None:
    with pytest.raises(KernelError) as info:
        proto.parse_reply("   ")
    assert info.value.errno == errno.EPROTO


@pytest.mark.parametrize(
    "line",
    [
        "criu-aio-probe protocol=1 version=1.0",
        "[    2.3] random: crng init donecriu-aio-probe protocol=1 version=1.0",
        "criu-aio-probe protocol=1 version=9.9 newkey=x",
    ],
)
def test_hello_found_even_after_noise(line: str) -> None:
    hello = proto.find_hello(line)
    assert hello is not None
    assert hello.integer("protocol") == proto.PROTOCOL


@pytest.mark.parametrize("line", ["", "Linux version 6.1", "criu-aio-probe 1.0 protocol 1"])
def test_noise_is_not_a_hello(line: str) -> None:
    assert proto.find_hello(line) is None


def test_other_protocol_is_refused_with_a_hint() -> None:
    with pytest.raises(KernelError) as info:
        proto.find_hello("criu-aio-probe protocol=2 version=2.0")
    assert info.value.errno == errno.EPROTONOSUPPORT
    assert "protocol 2" in str(info.value) and "agent/" in str(info.value)


def test_facts() -> None:
    facts = proto.facts_from(proto.parse_reply(FACTS_LINE + " future=1"))
    assert facts == HostFacts(
        kernel_release="6.1.0-50-amd64",
        boot_id="22a1d7b8-41da",
        page_size=4096,
        possible_cpus=64,
        aio_max_nr=65536,
        aio_nr=12,
        machine="x86_64",
    )
    assert facts.aio_headroom == 65536 - 12


def test_facts_the_agent_could_not_read() -> None:
    line = FACTS_LINE.replace("possible_cpus=64", "possible_cpus=-1")
    with pytest.raises(KernelError, match="/sys"):
        proto.facts_from(proto.parse_reply(line))


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("facts release=x page_size=4096 possible_cpus=2 aio_nr=0", "aio_max_nr"),
        ("facts page_size=4096 possible_cpus=two aio_nr=0 aio_max_nr=1", "possible_cpus"),
    ],
)
def test_facts_missing_or_bad_number(line: str, field: str) -> None:
    with pytest.raises(KernelError, match=field):
        proto.facts_from(proto.parse_reply(line))


def test_ring_success_and_errno() -> None:
    ok = proto.parse_reply("ring nr_req=200 errno=0 ring_len=16384 nr=511 pages=4 kept=2")
    assert proto.ring_from(ok, 200) == RingProbe(nr_req=200, ring_len=16384, nr=511)
    refused = proto.parse_reply("ring nr_req=70000 errno=11 ring_len=0 nr=0 pages=0 kept=2")
    assert proto.ring_from(refused, 70000) == RingProbe(nr_req=70000, errno=errno.EAGAIN)


@pytest.mark.parametrize(
    ("line", "asked", "match"),
    [
        ("ring nr_req=5 errno=0 ring_len=4096 nr=127 pages=1", 6, "io_setup\\(5\\)"),
        ("ring nr_req=5 errno=0 ring_len=0 nr=0 pages=0", 5, "ring_len=0"),
        ("facts release=x", 5, "expected a 'ring'"),
        ("error errno=12 out of memory keeping contexts", 5, "out of memory"),
    ],
)
def test_ring_reply_errors(line: str, asked: int, match: str) -> None:
    with pytest.raises(KernelError, match=match):
        proto.ring_from(proto.parse_reply(line), asked)


def test_agent_error_keeps_its_errno() -> None:
    with pytest.raises(KernelError) as info:
        proto.expect(proto.parse_reply("error errno=12 out of memory"), "ring")
    assert info.value.errno == errno.ENOMEM


def test_requests() -> None:
    assert proto.setup_request(7) == "setup 7 keep"
    assert proto.setup_request(7, keep=False) == "setup 7 destroy"
    assert proto.released_from(proto.parse_reply("released count=3 errno=0")) == 3
