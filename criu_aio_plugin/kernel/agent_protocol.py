"""criu-aio-probe's line protocol, without I/O: requests out, parsed replies in.

Grammar (agent/PROTOCOL.md is the reference; version 1)::

    hello    = "criu-aio-probe" SP "protocol=" INT SP "version=" TOKEN *(SP pair)
    reply    = kind *(SP pair) [SP text]      ; one line per request, "\\n"-terminated
    kind     = "facts" / "ring" / "released" / "pong" / "bye" / "error"
    pair     = KEY "=" TOKEN                  ; TOKEN has no spaces and no "="
    requests = "facts" / "setup" SP INT [SP ("keep" / "destroy")] / "release"
               / "ping" / "quit"

Unknown pairs are ignored (a newer agent may add facts); a different protocol
number is refused. Everything here is a pure function so it is tested on
strings; criu_aio_plugin.kernel.agent moves the lines over a pipe.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Mapping
from dataclasses import dataclass, field

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.kernel.interface import HostFacts, RingProbe

PROTOCOL = 1
HELLO_WORD = "criu-aio-probe"
HELLO_MARK = f"{HELLO_WORD} protocol="
MAX_NR_REQ = 0xFFFFFFFF  # io_setup takes an unsigned int


@dataclass(frozen=True)
class Reply:
    """One parsed reply line: its kind, its key=value pairs and any free text."""

    kind: str
    pairs: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def integer(self, key: str) -> int:
        value = self.pairs.get(key)
        if value is None:
            raise KernelError(f"agent reply {self.kind!r} lacks {key}=", errno=_errno.EPROTO)
        try:
            return int(value)
        except ValueError as err:
            raise KernelError(
                f"agent reply {self.kind!r}: {key}={value!r} is not an integer", errno=_errno.EPROTO
            ) from err


def parse_reply(line: str) -> Reply:
    """Split a reply line; pairs stop at the first word that is not KEY=VALUE."""
    words = line.strip().split(" ")
    if not words or not words[0]:
        raise KernelError("agent sent an empty reply", errno=_errno.EPROTO)
    pairs: dict[str, str] = {}
    rest = 1
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not key:
            break
        pairs[key] = value
        rest += 1
    return Reply(words[0], pairs, " ".join(words[rest:]))


def find_hello(line: str) -> Reply | None:
    """The hello in *line*, or None when the line is noise (boot messages, banners).

    The mark may follow garbage on the same line: a serial port can carry
    half a line of kernel output before the agent's first write.
    """
    at = line.find(HELLO_MARK)
    if at < 0:
        return None
    hello = parse_reply(line[at:])
    version = hello.integer("protocol")
    if version != PROTOCOL:
        raise KernelError(
            f"the agent speaks protocol {version}, this criu-aio speaks {PROTOCOL}",
            errno=_errno.EPROTONOSUPPORT,
            hint="install the criu-aio-probe built from this criu-aio's agent/ folder",
        )
    return hello


def setup_request(nr_req: int, *, keep: bool = True) -> str:
    return f"setup {nr_req} {'keep' if keep else 'destroy'}"


def expect(reply: Reply, kind: str) -> Reply:
    """*reply* if it is of *kind*; an agent-side error or anything else raises."""
    if reply.kind == kind:
        return reply
    if reply.kind == "error":
        code = reply.pairs.get("errno", "")
        raise KernelError(
            f"the agent refused: {reply.text or 'no reason given'}",
            errno=int(code) if code.isdigit() else _errno.EPROTO,
        )
    raise KernelError(
        f"expected a {kind!r} reply from the agent, got {reply.kind!r}", errno=_errno.EPROTO
    )


def facts_from(reply: Reply) -> HostFacts:
    expect(reply, "facts")
    cpus = reply.integer("possible_cpus")
    page = reply.integer("page_size")
    if cpus <= 0 or page <= 0:
        # the agent reports -1 when /sys or /proc is not mounted where it runs
        raise KernelError(
            f"the agent could not read its host's facts (possible_cpus={cpus}, page_size={page})",
            hint="run the agent where /proc and /sys are mounted",
        )
    return HostFacts(
        kernel_release=reply.pairs.get("release", "unknown"),
        boot_id=reply.pairs.get("boot_id", "unknown"),
        page_size=page,
        possible_cpus=cpus,
        aio_max_nr=reply.integer("aio_max_nr"),
        aio_nr=reply.integer("aio_nr"),
        machine=reply.pairs.get("machine", "unknown"),
    )


def ring_from(reply: Reply, nr_req: int) -> RingProbe:
    expect(reply, "ring")
    echoed = reply.integer("nr_req")
    if echoed != nr_req:
        raise KernelError(
            f"the agent answered for io_setup({echoed}) when asked for io_setup({nr_req})",
            errno=_errno.EPROTO,
        )
    err = reply.integer("errno")
    if err:
        return RingProbe(nr_req=nr_req, errno=err)
    ring_len, nr = reply.integer("ring_len"), reply.integer("nr")
    if ring_len <= 0 or nr <= 0:
        raise KernelError(
            f"the agent reported io_setup({nr_req}) succeeded with ring_len={ring_len} nr={nr}",
            errno=_errno.EPROTO,
        )
    return RingProbe(nr_req=nr_req, ring_len=ring_len, nr=nr)


def released_from(reply: Reply) -> int:
    expect(reply, "released")
    return reply.integer("count")
