"""The live kernel: real io_setup through the probe worker, real fs.aio-nr."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from criu_aio_plugin import status
from criu_aio_plugin.decision.decide import decide
from criu_aio_plugin.decision.judge import judge
from criu_aio_plugin.estimator.check import run_aio_check
from criu_aio_plugin.estimator.converge import estimate
from criu_aio_plugin.estimator.model import ModelStore, calibrate
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel import host
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.kernel.live import LiveKernel
from criu_aio_plugin.kernel.simulated import modern
from criu_aio_plugin.kernel.syscalls import AioSyscalls

pytestmark = pytest.mark.live


@pytest.fixture
def live() -> Iterator[LiveKernel]:
    kernel = LiveKernel()
    yield kernel
    kernel.close()
    kernel.settle(1 << 62)  # tests measure fs.aio-nr: leave none of ours behind


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    raise AssertionError("no PPid line")


def test_live_check_passes_here(live: LiveKernel) -> None:
    report = run_aio_check(live)
    assert report.ok, report.summary
    assert report.smallest_ring_len == modern(host.possible_cpus()).arithmetic.smallest_ring_len


def test_live_agrees_with_simulated_modern_kernel(live: LiveKernel) -> None:
    sim = modern(host.possible_cpus(), page=host.page_size())
    values = sorted(
        {*range(1, 300), *range(300, 20000, 97), *(criu_formula(p * 4096) for p in range(1, 200))}
    )
    got = live.probe_many(values)
    for n, probe in zip(values, got, strict=True):
        assert probe.ok, probe
        assert probe.ring_len == sim.probe(n).ring_len, n
        assert probe.nr == (probe.ring_len - 32) // 32
    know = calibrate(live)
    assert know.model is not None
    assert know.model.arithmetic == sim.arithmetic
    for pages in (1, 2, 3, 17, 100, 256):
        length = pages * host.page_size()
        for stored in (criu_formula(length), criu_formula(length) + 500, None):
            est = estimate(live, length, stored)
            ref = estimate(sim, length, stored)
            assert est.status is ref.status and est.ok
            assert sim.arithmetic.ring_len(est.nr_req) == length


def test_probe_worker_is_not_our_child(live: LiveKernel) -> None:
    live.probe(1)
    worker = live._worker
    assert worker is not None
    assert _ppid(worker.pid) != os.getpid()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_closing_does_not_wait_and_budget_comes_back(live: LiveKernel) -> None:
    got = live.probe_many([1000, 2000])
    assert all(p.ok for p in got)
    assert live.charge == 3000  # held in fs.aio-nr by the worker's live contexts
    live.close()
    assert live.teardown_wait == 0.0  # close never waits for the RCU teardown
    live.settle(host.read_aio_max_nr() + 1)  # cannot be met: waits for every worker
    assert live.charge == 0 and live.teardown_wait > 0.0


def test_own_probes_never_cause_a_budget_verdict() -> None:
    room = host.read_aio_max_nr() - host.read_aio_nr()
    big = room // 2 + 1  # one fits (with room to spare for other users), two do not
    kernel = LiveKernel(charge_limit=1 << 40)  # no pre-emptive retiring
    try:
        first = kernel.probe(big)
        second = kernel.probe(big)  # EAGAIN because of our own first context
        assert first.ok and second.ok
        # Two workers unless other AIO users freed budget between the two probes
        # (this machine is shared); a second worker always came after a wait.
        assert kernel.workers_started in (1, 2)
        assert (kernel.workers_started == 2) == (kernel.teardown_wait > 0)
    finally:
        kernel.close()


@pytest.fixture
def filled_budget() -> Iterator[int]:
    """Real contexts, held by a child, leave only 100 events of fs.aio-nr free."""
    leave = 100
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(ready_r)
            os.close(stop_w)
            sysc = AioSyscalls()
            room = host.read_aio_max_nr() - host.read_aio_nr()
            while room > leave:
                sysc.io_setup(min(room - leave, host.read_aio_max_nr()))
                room = host.read_aio_max_nr() - host.read_aio_nr()
            os.write(ready_w, b"1")
            os.read(stop_r, 1)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(stop_r)
    try:
        assert os.read(ready_r, 1) == b"1", "could not fill fs.aio-nr"
        yield leave
    finally:
        os.close(stop_w)  # the child exits; its contexts are torn down
        os.waitpid(pid, 0)
        os.close(ready_r)


def test_budget_verdict_with_real_contexts(filled_budget: int) -> None:
    kernel = LiveKernel()
    try:
        length = 64 * host.page_size()  # needs ~4094 events: far above what is left
        est = estimate(kernel, length, criu_formula(length))
        assert est.status is status.BUDGET, est
        assert est.needed > filled_budget
        assert "fs.aio-max-nr=" in est.reason and "fs.aio-nr=" in est.reason
        ring = ImageRing("/ckpt/mm-7.img", 7, 0x7F0000000000, criu_formula(4096), 4096)
        judged = judge(kernel, [ring] * 2, store=ModelStore(persistent=False))
        # Two 1-page rings: CRIU's nr_req (62 each) fits only if other AIO users
        # freed some budget meanwhile (the machine is shared); otherwise the
        # judgement picks smaller nr_req values or reports the budget.
        assert judged.status in (status.FINE, status.REWRITE, status.BUDGET)
        assert judged.over_budget == (judged.budget_needed > judged.headroom)
        if judged.status is status.BUDGET:
            assert "fs.aio-max-nr=" in decide(judged).message
    finally:
        kernel.close()
    assert host.read_aio_max_nr() - host.read_aio_nr() >= 0


def test_plan_is_free_when_warm_and_never_waits(tmp_path: Path) -> None:
    page = host.page_size()
    rings = [
        ImageRing(
            f"/ckpt/mm-{i}.img", i, 0x7F0000000000 + i * 0x100000, criu_formula(p * page), p * page
        )
        for i, p in enumerate((1, 2, 9, 33))
    ]
    store = ModelStore(str(tmp_path))
    cold = LiveKernel()
    try:
        first = judge(cold, rings, store=store)
    finally:
        cold.close()
    assert first.status is status.FINE and first.teardown_wait == 0.0
    assert 0 < first.probes <= len(rings) + 2  # calibration + one per size, one batch
    warm = LiveKernel()
    try:
        second = judge(warm, rings, store=store)
    finally:
        warm.close()
    assert second.status is status.FINE and second.probes == 0
    assert warm.workers_started == 0  # no fork at all when warm


@pytest.mark.criu
def test_check_cli_with_real_criu(criu_bin: str, capsys: pytest.CaptureFixture[str]) -> None:
    from criu_aio_plugin.cli import exitcodes
    from criu_aio_plugin.cli.check import run

    code = run(["--criu", criu_bin, "--json"], "criu-aio check")
    doc = json.loads(capsys.readouterr().out)
    assert doc["criu"]["ok"], doc["criu"]["output"]
    assert doc["aio"]["ok"] and code == exitcodes.OK
    # arguments after `--` go to `criu check` (here a bad one)
    code = run(["--criu", criu_bin, "--", "--not-a-criu-option"], "criu-aio check")
    out = capsys.readouterr().out
    assert code == exitcodes.CRIU_CHECK_FAILED
    assert "--not-a-criu-option" in out
    # an option criu-aio does not know is a usage error
    with pytest.raises(SystemExit) as usage:
        run(["--criu", criu_bin, "--josn"], "criu-aio check")
    assert usage.value.code == exitcodes.USAGE


def test_prestart_then_close_leaves_no_child() -> None:
    kernel = LiveKernel()
    kernel.prestart()
    kernel.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    kernel.settle(1 << 62)
    assert kernel.charge == 0
