"""The one restore decision (``decision.decide``) and the one exit-code table.

Pure: judgements are built by hand, so every rule of decide's docstring is
exercised without a kernel.
"""

from __future__ import annotations

import errno

import pytest

from criu_aio_plugin import status as st
from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.decision.decide import (
    ACT_ERROR,
    ACT_FINE,
    ACT_REFUSE_BUDGET,
    ACT_REFUSE_IMPOSSIBLE,
    ACT_REWRITE,
    FIX,
    REPORT,
    RESTORE,
    decide,
)
from criu_aio_plugin.decision.model import Judgement, RingVerdict
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel.interface import HostFacts


def _ring(status: st.Status, n: int = 1, nr_req: int = 0, reason: str = "") -> RingVerdict:
    ring = ImageRing(f"/ckpt/mm-{n}.img", n, 0x7F0000000000 + n * 0x10000, 127, 8192)
    chosen = nr_req or (127 if status is st.FINE else 0)
    return RingVerdict(ring, status, chosen, reason, needed=64 if status is st.BUDGET else 0)


def _judged(*rings: RingVerdict, live: bool = True, room: int = 65536) -> Judgement:
    need = sum(r.charge for r in rings)
    host = HostFacts("6.18.0", "boot", 4096, 2, 65536, 65536 - room)
    kernel = "live" if live else "sim:cpus=2"
    return Judgement("/ckpt", kernel, live, host, tuple(rings), need, room)


@pytest.mark.parametrize(
    ("rings", "action", "code", "eno"),
    [
        ((), ACT_FINE, 0, 0),
        ((_ring(st.FINE),), ACT_FINE, 0, 0),
        ((_ring(st.FINE), _ring(st.REWRITE, 2, 255)), ACT_REWRITE, 3, 0),
        ((_ring(st.REWRITE, 1, 255), _ring(st.BUDGET, 2)), ACT_REFUSE_BUDGET, 5, errno.EAGAIN),
        ((_ring(st.BUDGET), _ring(st.IMPOSSIBLE, 2)), ACT_REFUSE_IMPOSSIBLE, 4, errno.ERANGE),
        ((_ring(st.IMPOSSIBLE), _ring(st.ERROR, 2)), ACT_ERROR, 1, errno.EIO),
    ],
)
def test_the_worst_ring_decides(
    rings: tuple[RingVerdict, ...], action: str, code: int, eno: int
) -> None:
    for intent in (REPORT, FIX, RESTORE):
        d = decide(_judged(*rings), intent)
        assert (d.action, d.errno) == (action, eno)
        assert exitcodes.for_status(d.status) == code
        assert d.refused is (eno != 0)


def test_total_over_budget_is_a_budget_refusal() -> None:
    j = _judged(_ring(st.FINE), _ring(st.REWRITE, 2, 300), room=100)
    assert j.over_budget and j.status is st.BUDGET
    d = decide(j, RESTORE)
    assert d.action == ACT_REFUSE_BUDGET and d.errno == errno.EAGAIN
    assert "raise fs.aio-max-nr to at least" in d.problems[-1]
    assert "427" in d.message  # 127 + 300 needed


# The write rule, case by case (decide's docstring, rules 1-4).
@pytest.mark.parametrize(
    ("rings", "live", "room", "intent", "write"),
    [
        ((_ring(st.REWRITE, 1, 255),), True, 65536, REPORT, False),  # 1: reports never write
        ((_ring(st.REWRITE, 1, 255),), True, 65536, FIX, True),
        ((_ring(st.REWRITE, 1, 255),), True, 65536, RESTORE, True),
        ((_ring(st.REWRITE, 1, 255),), False, 65536, FIX, False),  # 2: only the live kernel
        ((_ring(st.REWRITE, 1, 255),), False, 65536, RESTORE, False),
        ((_ring(st.REWRITE, 1, 255), _ring(st.IMPOSSIBLE, 2)), True, 65536, FIX, False),  # 3
        ((_ring(st.REWRITE, 1, 255), _ring(st.BUDGET, 2)), True, 65536, FIX, False),  # 3
        ((_ring(st.REWRITE, 1, 255),), True, 10, FIX, True),  # 4: fix writes over the total
        ((_ring(st.REWRITE, 1, 255),), True, 10, RESTORE, False),  # 4: a restore does not
        ((_ring(st.FINE),), True, 65536, FIX, False),  # nothing to write
    ],
)
def test_when_rewrites_are_written(
    rings: tuple[RingVerdict, ...], live: bool, room: int, intent: str, write: bool
) -> None:
    d = decide(_judged(*rings, live=live, room=room), intent)
    assert d.write is write
    assert d.rewrites == tuple(
        (r.ring.file, r.ring.ring_id, r.nr_req) for r in rings if r.status is st.REWRITE
    )


def test_the_decision_does_not_depend_on_the_intent_but_for_writing() -> None:
    j = _judged(_ring(st.FINE), _ring(st.REWRITE, 2, 255), _ring(st.IMPOSSIBLE, 3, reason="x"))
    decisions = [decide(j, intent) for intent in (REPORT, FIX, RESTORE)]
    assert (
        len({(d.action, d.status, d.errno, d.message, d.rewrites, d.problems) for d in decisions})
        == 1
    )


def test_messages_name_file_ring_sizes_host_and_what_to_do() -> None:
    reason = "the smallest ring here is 2 pages (16 possible CPUs); restore on a host with fewer"
    d = decide(_judged(_ring(st.IMPOSSIBLE, 7, reason=reason), _ring(st.IMPOSSIBLE, 8)))
    assert d.message.startswith("ring 0x7f0000070000 in mm-7.img (8192 bytes, 2 pages, nr_req 127)")
    assert "16 possible CPUs" in d.message and "can-restore" in d.message
    assert "(+1 more)" in d.message and len(d.problems) == 2
    fine = decide(_judged(_ring(st.FINE)))
    assert "1 AIO ring(s), all fine as stored on live (6.18.0, 2 possible CPUs" in fine.message
    assert decide(_judged()).message.startswith("no AIO rings in /ckpt")


def test_exit_codes_one_table() -> None:
    assert exitcodes.for_status(st.REWRITE) == exitcodes.FIXABLE == 3
    assert exitcodes.for_status(st.REWRITE, made_restorable=True) == exitcodes.OK
    assert exitcodes.for_status(st.BUDGET, made_restorable=True) == exitcodes.BUDGET
    assert [exitcodes.for_refusal(s) for s in st.ALL] == [1, 1, 5, 4, 1]
    assert exitcodes.worst_code([0, 3, 6, 4]) == exitcodes.CRIU_CHECK_FAILED
    assert exitcodes.worst_code([0, 3, 1, 6]) == exitcodes.ERROR
    text = exitcodes.epilog(*exitcodes.DESCRIPTIONS)
    for code, meaning in exitcodes.DESCRIPTIONS.items():
        assert f"  {code}  {meaning}" in text


def test_status_vocabulary() -> None:
    assert [s.name for s in st.ALL] == ["fine", "rewrite", "budget", "impossible", "error"]
    assert [s.severity for s in st.ALL] == sorted(s.severity for s in st.ALL)
    assert st.worst([st.FINE, st.BUDGET, st.REWRITE]) is st.BUDGET
    assert st.best([st.ERROR, st.BUDGET, st.REWRITE]) is st.REWRITE
    assert st.by_name("impossible") is st.IMPOSSIBLE
    assert [s.restorable for s in st.ALL] == [True, True, False, False, False]
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(st.REWRITE)) is st.REWRITE
    assert copy.deepcopy(st.ERROR) is st.ERROR
    with pytest.raises(AttributeError):
        st.FINE.name = "x"  # type: ignore[misc]
