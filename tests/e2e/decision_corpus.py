"""The corpus of the cross-entry-point test (test_one_decision.py): checkpoints x kernels.

Checkpoints are real (holder trees dumped by the real CRIU here, some with
nr_req forged as another CRIU build writes it) or synthetic
(``criu_aio_plugin.images.synthetic``: rings no process on this machine can
hold, hundreds of processes). Kernels are the live one and simulated ones
(``--kernel``/``$CRIU_AIO_KERNEL`` specs), with AIO budgets that fit, fit only
after the judge shrinks fine rings to their smallest nr_req, and do not fit.

``Seen`` is what one entry point showed of the decision, reduced to what every
entry point can show: the action and status, every ring's status and nr_req,
the exit code and (RPC) cr_errno, and the one-line message.
"""

from __future__ import annotations

import errno
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.decision.checkpoint import Outcome
from criu_aio_plugin.images import synthetic
from criu_aio_plugin.images.synthetic import SynthRing
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.status import by_name

PAGE = 4096

# --- checkpoints ----------------------------------------------------------------


@dataclass(frozen=True)
class RealSpec:
    """A holder tree dumped by the real CRIU: ring sizes in pages, forged or not."""

    pages: tuple[int, ...]
    pending: tuple[int, ...] = ()  # unreaped events per ring (0 when absent)
    children: int = 0
    forged: bool = False  # nr_req = k - 2 in every mm image, as another CRIU build writes it


@dataclass(frozen=True)
class SynthSpec:
    """mm images written by ``images.synthetic``: pid -> ring lengths in bytes."""

    rings: dict[int, tuple[int, ...]]
    forged: bool = False

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        for pid, lengths in self.rings.items():
            rings = []
            addr = 0x7F00_0000_0000 + pid * 0x10_0000_0000
            for length in lengths:
                nr_req = other_build_nr_req(length) if self.forged else criu_formula(length)
                rings.append(SynthRing(addr, length, nr_req))
                addr += length + 16 * PAGE
            data = synthetic.mm_image_bytes(rings, 30, pid)
            (directory / f"mm-{pid}.img").write_bytes(data)


def other_build_nr_req(ring_len: int) -> int:
    """nr_req as another CRIU build writes it: k - 2 (CRIU 4.x writes (k - 2) / 2)."""
    return (ring_len - 32) // 32 - 2


def pages(*counts: int, page: int = PAGE) -> tuple[int, ...]:
    return tuple(c * page for c in counts)


CHECKPOINTS: dict[str, RealSpec | SynthSpec] = {
    # Real: two processes, each holding 1-, 2- (2 events pending) and 5-page rings.
    "real": RealSpec(pages=(1, 2, 5), pending=(0, 2, 0), children=1),
    # The same shape, nr_req as another CRIU build writes it (CRIU alone: `wrong aio`).
    "real-forged": RealSpec(pages=(1, 2, 5), pending=(0, 2, 0), children=1, forged=True),
    # Rings big enough for a 64-CPU host, one of them 16 pages (one 64 KiB page).
    "real-big": RealSpec(pages=(5, 16, 17), pending=(1, 0, 0)),
    "syn-small": SynthSpec({101: pages(1, 1, 2), 102: pages(2)}),
    # 257 pages is the smallest ring at 4096 possible CPUs.
    "syn-huge": SynthSpec({201: pages(257), 202: pages(300)}),
    # Rings dumped on a 64 KiB-page host: 1, 2 and 4 of its pages.
    "syn-64k": SynthSpec({301: pages(1, 2, 4, page=65536)}),
    "syn-forged": SynthSpec({401: pages(2, 3), 402: pages(8)}, forged=True),
    # 60 processes with 2- and 3-page rings: a budget that only shrinking fits.
    "syn-many": SynthSpec({500 + i: pages(2, 3) for i in range(60)}),
    # mm images without rings.
    "syn-none": SynthSpec({601: (), 602: ()}),
}

# --- cases ----------------------------------------------------------------------

LIVE = "live"
# Budgets (sim:cpus=2, CRIU's nr_req fine for every ring): "real" asks for
# 2 x (62 + 126 + 318) = 1012 events as stored, 2 x (1 + 63 + 255) = 638 with
# every ring at its smallest nr_req; "syn-many" 60 x (126 + 190) = 18960 and
# 60 x (63 + 127) = 11400.
REAL_FITS = "sim:cpus=2,aio_max_nr=2000"
REAL_SHRINKS = "sim:cpus=2,aio_max_nr=800"
REAL_OVER = "sim:cpus=2,aio_max_nr=500"
# Others hold fs.aio-nr: 336 left, the forged rings need 638 at their smallest.
OTHERS_HOLD = "sim:cpus=2,aio_max_nr=65536,aio_nr=65200"
MANY_SHRINKS = "sim:cpus=2,aio_max_nr=12000"
MANY_OVER = "sim:cpus=2,aio_max_nr=11000"
# The 8-page ring alone needs 447 events: io_setup is refused for it (a ring-level budget).
RING_OVER = "sim:cpus=2,aio_max_nr=200"

ALL_KERNELS = (
    LIVE,
    "sim:cpus=1",
    "sim:cpus=2",
    "sim:cpus=16",
    "sim:cpus=64",
    "sim:cpus=4096",
    "sim:v3.10",
    "sim:arm64-64k",
)

FINE, REWRITE, IMPOSSIBLE, BUDGET = "fine", "rewrite", "refuse-impossible", "refuse-budget"


@dataclass(frozen=True)
class Case:
    checkpoint: str
    kernel: str
    action: str | None  # expected; None: the live kernel (compared with its simulated twin)
    budget: str = ""  # "fits", "shrinks" or "over" for the budget cases

    @property
    def id(self) -> str:
        return f"{self.checkpoint}@{self.kernel}"

    @property
    def real(self) -> bool:
        return isinstance(CHECKPOINTS[self.checkpoint], RealSpec)


def _row(checkpoint: str, actions: tuple[str, ...]) -> list[Case]:
    """One case per kernel of ALL_KERNELS (live: expectation taken from its simulated twin)."""
    assert len(actions) == len(ALL_KERNELS) - 1
    return [Case(checkpoint, LIVE, None)] + [
        Case(checkpoint, k, a) for k, a in zip(ALL_KERNELS[1:], actions, strict=True)
    ]


# 4 KiB-page rings: the smallest ring is 1 page up to 15 possible CPUs, 2 pages
# at 16, 5 at 64, 257 at 4096; CRIU's nr_req gives exactly a ring at least that
# big. v3.10 does not double: CRIU's nr_req gives half of a ring of 3+ pages,
# and the other build's k - 2 is exactly right there. On 64 KiB pages a ring
# that is not whole 64 KiB pages cannot exist.
CASES: list[Case] = [
    #                    cpus=1   cpus=2   16          64          4096        v3.10    arm64-64k
    *_row("real", (FINE, FINE, IMPOSSIBLE, IMPOSSIBLE, IMPOSSIBLE, REWRITE, IMPOSSIBLE)),
    *_row("real-forged", (REWRITE, REWRITE, IMPOSSIBLE, IMPOSSIBLE, IMPOSSIBLE, FINE, IMPOSSIBLE)),
    *_row("real-big", (FINE, FINE, FINE, FINE, IMPOSSIBLE, REWRITE, IMPOSSIBLE)),
    Case("real", REAL_FITS, FINE, "fits"),
    Case("real", REAL_SHRINKS, REWRITE, "shrinks"),
    Case("real", REAL_OVER, BUDGET, "over"),
    Case("real-forged", OTHERS_HOLD, BUDGET, "over"),
    Case("syn-small", "sim:cpus=1", FINE),
    Case("syn-small", "sim:cpus=16", IMPOSSIBLE),
    Case("syn-small", "sim:v3.10", FINE),
    Case("syn-small", "sim:arm64-64k", IMPOSSIBLE),
    Case("syn-huge", LIVE, None),
    Case("syn-huge", "sim:cpus=4096", FINE),
    # Without doubling the rings need 71100 events: more than fs.aio-max-nr's default.
    Case("syn-huge", "sim:v3.10", BUDGET, "over"),
    Case("syn-huge", "sim:arm64-64k", IMPOSSIBLE),
    Case("syn-64k", LIVE, None),
    Case("syn-64k", "sim:arm64-64k", FINE),
    Case("syn-64k", "sim:page=65536,cpus=64", FINE),
    Case("syn-64k", "sim:cpus=4096", IMPOSSIBLE),
    Case("syn-64k", "sim:v3.10", REWRITE),
    Case("syn-forged", LIVE, None),
    Case("syn-forged", "sim:cpus=16", REWRITE),
    Case("syn-forged", "sim:cpus=64", IMPOSSIBLE),
    Case("syn-forged", "sim:v3.10", FINE),
    Case("syn-forged", RING_OVER, BUDGET, "over"),
    Case("syn-many", "sim:cpus=2", FINE, "fits"),
    Case("syn-many", MANY_SHRINKS, REWRITE, "shrinks"),
    Case("syn-many", MANY_OVER, BUDGET, "over"),
    Case("syn-none", LIVE, None),
    Case("syn-none", "sim:cpus=4096", FINE),
]

# --- what an entry point showed ---------------------------------------------------

RingKey = tuple[str, int]  # (mm image file name, ring address)
RingSeen = tuple[str, int, int | None]  # (status, stored nr_req, nr_req a restore here uses)

# status -> the decision's action (decision/decide.py)
ACTIONS = {"fine": FINE, "rewrite": REWRITE, "budget": BUDGET, "impossible": IMPOSSIBLE}
ACTIONS["error"] = "error"
_HEADROOM = re.compile(r"of \d+ fs\.aio-nr headroom")


def comparable_message(message: str) -> str:
    """The message without what changes between two runs on the live kernel (its headroom)."""
    return _HEADROOM.sub("of N fs.aio-nr headroom", message)


@dataclass
class Seen:
    """The decision as one entry point showed it."""

    entry: str
    action: str
    status: str
    rings: dict[RingKey, RingSeen]
    code: int | None = None  # exit code (None: the library itself)
    cr_errno: int | None = None  # RPC only: the answer's cr_errno (0: CRIU's success)
    message: str | None = None  # None: not shown by this entry point
    notes: list[str] = field(default_factory=list)  # what else disagreed (images, argv...)

    def decision(self) -> tuple[str, str, dict[RingKey, RingSeen]]:
        return self.action, self.status, self.rings


def from_outcome(entry: str, outcome: Outcome) -> Seen:
    d, j = outcome.decision, outcome.judgement
    rings = {
        (r.ring.file, r.ring.ring_id): (
            r.status.name,
            r.ring.nr_req,
            r.nr_req if r.status.restorable else None,
        )
        for r in j.rings
    }
    return Seen(entry, d.action, d.status.name, rings, message=d.message)


def from_verdict(entry: str, doc: dict[str, Any], code: int) -> Seen:
    """A verdict document (docs/schemas/verdict.schema.json) and the command's exit code."""
    rings = {
        (r["file"], int(r["ring"], 16)): (r["status"], r["stored_nr_req"], r["nr_req"])
        for r in doc["rings"]
    }
    return Seen(entry, doc["decision"], doc["status"], rings, code=code, message=doc["message"])


# rpc/aio_work._restore_in at debug level, one line per ring.
_RING_LINE = re.compile(
    r" debug: (?P<file>\S+): ring (?P<ring>0x[0-9a-f]+) (?P<len>\d+) bytes nr_req "
    r"(?P<stored>\d+) -> (?P<status>\w+) (?P<nr>\d+) on (?P<kernel>\S+)$"
)


def rings_from_log(text: str) -> dict[RingKey, RingSeen]:
    rings: dict[RingKey, RingSeen] = {}
    for line in text.splitlines():
        m = _RING_LINE.search(line)
        if m is None:
            continue
        status = by_name(m["status"])
        nr = int(m["nr"]) if status.restorable else None
        rings[(m["file"], int(m["ring"], 16))] = (status.name, int(m["stored"]), nr)
    return rings


def from_restore_path(
    entry: str,
    log: str,
    refused: str | None,
    code: int,
    cr_errno: int | None = None,
    message: str | None = None,
) -> Seen:
    """A `criu-aio restore` or swrk RESTORE: its log, and the status it refused with, if any.

    Handed over: the action is "rewrite" when some ring needs a new nr_req,
    else "fine" (the log's rings); refused: the status the exit code or
    cr_errno stands for, and the refusal's text.
    """
    rings = rings_from_log(log)
    if refused is not None:
        action = ACTIONS.get(refused, refused)
        return Seen(entry, action, refused, rings, code, cr_errno, message)
    statuses = {s for s, _, _ in rings.values()}
    status = "rewrite" if "rewrite" in statuses else "fine"
    if statuses - {"fine", "rewrite"}:
        status = "handed over with " + ",".join(sorted(statuses))
    return Seen(entry, status, status, rings, code, cr_errno)


def expected_code(entry: str, status: str) -> int:
    """The exit code the one table (cli/exitcodes.py) gives *entry* for *status*."""
    s = by_name(status)
    if entry in ("restore", "swrk"):
        # Refused: the table's refusal code; handed over: the stand-in CRIU's 0.
        return exitcodes.OK if s.restorable else exitcodes.for_refusal(s)
    return exitcodes.for_status(s)


EXPECTED_ERRNO = {"fine": 0, "rewrite": 0, "budget": errno.EAGAIN, "impossible": errno.ERANGE}
EXPECTED_ERRNO["error"] = errno.EIO


# --- the recording stand-in for CRIU ------------------------------------------------

# It must not look like criu-aio to criu_locate (no package import, no command
# word), so it answers a RESTORE with hand-encoded bytes: criu_resp{type=RESTORE
# (field 1 = 2), success=true (field 2 = 1)}.
STAND_IN = textwrap.dedent(
    """\
    #!{python} -S
    # A stand-in for CRIU: records its argv, the request it was handed and the
    # mm images in place at that moment, answers success and exits 0.
    import hashlib, json, os, socket, sys

    record = {{"argv": sys.argv[1:], "request": None, "images": {{}}}}
    folder = os.environ.get("STANDIN_IMAGES", "")
    if folder:
        for name in sorted(os.listdir(folder)):
            if name.startswith("mm-") and name.endswith(".img"):
                with open(os.path.join(folder, name), "rb") as f:
                    record["images"][name] = hashlib.sha256(f.read()).hexdigest()
    if sys.argv[1:2] == ["swrk"]:
        sock = socket.socket(fileno=int(sys.argv[2]))
        record["request"] = sock.recv(1 << 20).hex()
        sock.send(bytes([0x08, 0x02, 0x10, 0x01]))
    with open(os.environ["STANDIN_RECORD"], "a") as f:
        f.write(json.dumps(record) + "\\n")
    """
)


def write_stand_in(path: Path, python: str) -> str:
    path.write_text(STAND_IN.format(python=python))
    path.chmod(0o755)
    return str(path)


def stand_in_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
