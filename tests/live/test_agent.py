"""The agent run locally answers exactly what the live kernel answers.

Both ask this machine's kernel: AgentKernel through criu-aio-probe over a pipe,
LiveKernel through ctypes in a probe worker. Same facts, same rings, same
errnos, for every n from 1 to 2048 and the edges of io_setup's range.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from agent_build import build_agent

from criu_aio_plugin.kernel.agent import AgentKernel
from criu_aio_plugin.kernel.arithmetic import RingArithmetic
from criu_aio_plugin.kernel.interface import RingProbe
from criu_aio_plugin.kernel.live import LiveKernel

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def agent_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent(tmp_path_factory.mktemp("agent"))


def test_same_facts_as_live(agent_bin: Path) -> None:
    live = LiveKernel()
    with AgentKernel([str(agent_bin)]) as agent:
        a, b = agent.facts(), live.facts()
    live.close()
    same = ("kernel_release", "boot_id", "page_size", "possible_cpus", "aio_max_nr", "machine")
    assert {k: getattr(a, k) for k in same} == {k: getattr(b, k) for k in same}


def _both(agent: AgentKernel, values: list[int]) -> tuple[list[RingProbe], list[RingProbe]]:
    """The agent's and the live kernel's answers, each kernel's contexts gone after.

    Other tests on this machine may hold fs.aio-max-nr for a moment (the budget
    tests fill it on purpose): a value refused with EAGAIN by either side is
    asked again, both sides, a few times before it counts.
    """
    from_agent = agent.probe_many(values)
    agent.release()
    live = LiveKernel()
    try:
        from_live = live.probe_many(values)
        for _ in range(10):
            busy = [
                i
                for i, (a, b) in enumerate(zip(from_agent, from_live, strict=True))
                if errno.EAGAIN in (a.errno, b.errno)
            ]
            if not busy:
                break
            time.sleep(0.3)
            again = [values[i] for i in busy]
            for i, a, b in zip(busy, agent.probe_many(again), live.probe_many(again), strict=True):
                from_agent[i], from_live[i] = a, b
            agent.release()
    finally:
        live.close()
    return from_agent, from_live


def test_same_rings_as_live(agent_bin: Path) -> None:
    values = [*range(1, 2049), 4095, 4096, 4097, 32767, 0, 0x10000000 // 32 + 1]
    with AgentKernel([str(agent_bin)]) as agent:
        facts = agent.facts()
        from_agent, from_live = _both(agent, values)
    differ = [(a, b) for a, b in zip(from_agent, from_live, strict=True) if a != b]
    assert not differ, differ[:5]
    # and both are the arithmetic of section 1 for this host's possible CPUs
    model = RingArithmetic(page_size=facts.page_size, possible_cpus=facts.possible_cpus)
    for got in from_agent[:-2]:
        assert (got.ring_len, got.nr) == (model.ring_len(got.nr_req), model.ring_nr(got.nr_req))
    assert [p.errno for p in from_agent[-2:]] == [errno.EINVAL, errno.EINVAL]


def test_contexts_are_charged_and_released(agent_bin: Path) -> None:
    """Kept contexts count in fs.aio-nr by their requested n until `release`.

    Other AIO users on the machine move fs.aio-nr too; 3000 events is far more
    than the test bed's rings, so the differences stay readable.
    """
    with AgentKernel([str(agent_bin)]) as agent:
        for _ in range(20):  # wait out other tests that fill the budget on purpose
            if agent.facts().aio_headroom >= 6000:
                break
            time.sleep(0.5)
        before = agent.facts().aio_nr
        assert all(p.ok for p in agent.probe_many([1000, 1000, 1000]))
        held = agent.facts().aio_nr
        assert agent.release() == 3
        after = agent.facts().aio_nr
    assert held - before >= 3000
    assert held - after >= 3000


def test_own_contexts_never_read_as_the_hosts_budget(agent_bin: Path) -> None:
    """EAGAIN caused by the agent's own contexts is retried after a release."""
    with AgentKernel([str(agent_bin)]) as agent:
        headroom = agent.facts().aio_headroom
        if headroom < 64:
            pytest.skip(f"fs.aio-max-nr leaves only {headroom} events here")
        agent._charge_limit = headroom  # let our probes hold everything
        half = headroom // 2
        first = agent.probe(half)
        second = agent.probe(headroom - half + 1)  # fits only once `first` is gone
        assert first.ok and second.ok, (first, second)
