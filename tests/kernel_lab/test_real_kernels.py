"""Real Debian kernels agree with the ring arithmetic, the estimator and the check.

Each target is one Debian kernel booted under qemu with N possible CPUs
(scripts/kernel-lab); AgentKernel drives criu-aio-probe on the VM's serial port.
Expected verdicts come from two places that must agree: the issue's table for
4 KiB pages (CRIU's nr_req is right for every ring size at 2 CPUs; impossible
for 1 page at 16, 1-4 at 64, 1-16 at 256; right above) and RingArithmetic for
the VM's possible-CPU count. The simulated kernel with the same parameters must
give identical answers to the estimator and to the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_targets import Target

from criu_aio_plugin import status
from criu_aio_plugin.estimator import RingRequest, estimate_many, run_aio_check
from criu_aio_plugin.estimator.check import compact_ranges
from criu_aio_plugin.estimator.model import Knowledge
from criu_aio_plugin.kernel.agent import AgentKernel
from criu_aio_plugin.kernel.arithmetic import RingArithmetic, criu_formula
from criu_aio_plugin.kernel.select import kernel_from_spec
from criu_aio_plugin.report import aio_check

pytestmark = pytest.mark.kernel_lab

PAGE = 4096
CHECK_PAGES = 64  # covers the largest impossible range (16 pages at 256 CPUs) four times over
# possible CPUs -> ring sizes (pages) no nr_req can create there (the table)
IMPOSSIBLE_PAGES = {2: set(), 16: {1}, 64: {1, 2, 3, 4}, 256: set(range(1, 17))}


def expected_impossible(cpus: int) -> set[int]:
    model = RingArithmetic(page_size=PAGE, possible_cpus=cpus)
    derived = {p for p in range(1, CHECK_PAGES + 1) if p * PAGE < model.smallest_ring_len}
    if cpus in IMPOSSIBLE_PAGES:
        assert derived == IMPOSSIBLE_PAGES[cpus], "the arithmetic disagrees with the issue's table"
    return derived


def test_boots_with_the_asked_possible_cpus(vm: AgentKernel, target: Target) -> None:
    facts = vm.facts()
    assert facts.possible_cpus == target.cpus
    assert facts.kernel_release == target.release
    assert facts.page_size == PAGE
    assert facts.aio_nr == 0  # nothing else on the VM uses AIO


def test_every_n_matches_the_arithmetic_and_the_simulated_kernel(
    vm: AgentKernel, target: Target
) -> None:
    values = [*range(1, 1025), 2047, 2048, 2049, 4095, 4096, 8191, 8192, 0]
    real = vm.probe_many(values)
    vm.release()
    sim = kernel_from_spec(f"sim:cpus={target.cpus}")
    simulated = [sim.probe(n) for n in values]
    differ = [(r, s) for r, s in zip(real, simulated, strict=True) if r != s]
    assert not differ, f"{len(differ)} values differ, first: {differ[:3]}"
    model = RingArithmetic(page_size=PAGE, possible_cpus=target.cpus)
    assert all(
        (r.ring_len, r.nr) == (model.ring_len(r.nr_req), model.ring_nr(r.nr_req))
        for r in real
        if r.nr_req
    )


def test_criu_formula_right_exactly_above_the_floor(vm: AgentKernel, target: Target) -> None:
    impossible = expected_impossible(target.cpus)
    lengths = [p * PAGE for p in range(1, CHECK_PAGES + 1)]
    got = vm.probe_many([criu_formula(length) for length in lengths])
    vm.release()
    right = {
        g.ring_len // PAGE for g, length in zip(got, lengths, strict=True) if g.ring_len == length
    }
    assert right == set(range(1, CHECK_PAGES + 1)) - impossible


def test_estimator_verdicts_equal_the_simulated_kernel(vm: AgentKernel, target: Target) -> None:
    impossible = expected_impossible(target.cpus)
    requests = [RingRequest(p * PAGE, criu_formula(p * PAGE)) for p in range(1, 33)]
    real = estimate_many(vm, requests, Knowledge())
    vm.release()
    sim = estimate_many(kernel_from_spec(f"sim:cpus={target.cpus}"), requests, Knowledge())
    for req, r, s in zip(requests, real, sim, strict=True):
        pages = req.ring_len // PAGE
        assert (r.status is status.IMPOSSIBLE) if pages in impossible else r.ok, r
        if r.ok:
            assert vm.probe(r.nr_req).ring_len == req.ring_len
        assert (r.status, r.nr_req, r.probes, r.smallest_ring_len, r.possible_cpus) == (
            s.status,
            s.nr_req,
            s.probes,
            s.smallest_ring_len,
            s.possible_cpus,
        )
    vm.release()


def test_check_report_equals_the_simulated_kernel(vm: AgentKernel, target: Target) -> None:
    real = aio_check.to_json(run_aio_check(vm, max_pages=CHECK_PAGES, knowledge=Knowledge()))
    vm.release()
    sim_kernel = kernel_from_spec(f"sim:cpus={target.cpus}")
    sim = aio_check.to_json(run_aio_check(sim_kernel, max_pages=CHECK_PAGES, knowledge=Knowledge()))
    for doc in (real, sim):
        doc.pop("kernel")
        doc.pop("summary")  # names the kernel
    assert real == sim
    impossible = expected_impossible(target.cpus)
    assert real["ok"] is (not impossible)


def test_check_cli_against_the_booted_kernel(target: Target) -> None:
    """`criu-aio check --aio-only --json --kernel agent:...` boots its own VM."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "criu_aio_plugin",
            "check",
            "--aio-only",
            "--json",
            "--kernel",
            target.spec,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    doc = json.loads(done.stdout)
    report = doc.get("aio", doc)
    assert report["possible_cpus"] == target.cpus
    impossible = sorted(expected_impossible(target.cpus))
    statuses = report["statuses"]
    assert statuses["impossible"] == compact_ranges(impossible)
    if impossible:
        assert done.returncode == 4, done.stderr  # exitcodes.IMPOSSIBLE
    else:
        assert statuses["fine"].startswith("1-")
        assert done.returncode == 0, done.stderr
    assert statuses["rewrite"] == "" and statuses["error"] == "" and statuses["budget"] == ""


def test_no_vm_outlives_a_killed_user() -> None:
    """SIGKILL the process driving a VM: its qemu must go too (PR_SET_PDEATHSIG).

    Once per run, on the first suite and CPU count the lab was asked for.
    """
    suites = os.environ.get("CRIU_AIO_LAB_SUITES", "bullseye").split(",")
    target = Target(suites[0].strip(), int(_lab_cpus()[0]))
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from criu_aio_plugin.kernel.agent import AgentKernel\n"
            "k = AgentKernel(sys.argv[1])\n"
            "k.facts()\n"
            "print(k._proc.pid, flush=True)\n"
            "time.sleep(600)\n",
            target.spec.removeprefix("agent:"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdout is not None
    group = int(driver.stdout.readline())
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_alive(group):
        time.sleep(0.1)
    assert not _group_alive(group), f"process group {group} (qemu) outlived its user"


def _lab_cpus() -> list[str]:
    return os.environ.get("CRIU_AIO_LAB_CPUS", "2").split(",")


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in process group *pgid*."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
