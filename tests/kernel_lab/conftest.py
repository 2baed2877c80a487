"""Fixtures for the kernel lab: real Debian kernels booted under qemu (TCG).

These tests run through `scripts/kernel-lab test` (or `ci`), which downloads the
kernels, builds the initramfs and sets CRIU_AIO_LAB=1 with the suites and
possible-CPU counts to cover (CRIU_AIO_LAB_SUITES, CRIU_AIO_LAB_CPUS). Run
alone, without that preparation, they skip and say so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_targets import Target

from criu_aio_plugin.kernel.agent import AgentKernel

ENABLED = os.environ.get("CRIU_AIO_LAB") == "1"
HOW = "run `scripts/kernel-lab test` (all suites x 2,16,64,256 CPUs) or `scripts/kernel-lab ci`"


def _targets() -> list[Target]:
    suites = os.environ.get("CRIU_AIO_LAB_SUITES", "bullseye,bookworm,trixie,sid").split(",")
    cpus = [int(c) for c in os.environ.get("CRIU_AIO_LAB_CPUS", "2,16,64,256").split(",")]
    return [Target(s.strip(), c) for s in suites if s.strip() for c in cpus]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kernel_lab)
            if not ENABLED:
                item.add_marker(pytest.mark.skip(reason=f"kernel lab not prepared: {HOW}"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = _targets()
        metafunc.parametrize(
            "target", targets, ids=[f"{t.suite}-{t.cpus}cpus" for t in targets], scope="module"
        )


@pytest.fixture(scope="module")
def vm(target: Target) -> Iterator[AgentKernel]:
    """The target booted once per module, its agent driven through AgentKernel."""
    kernel = AgentKernel(target.spec.removeprefix("agent:"))
    try:
        yield kernel
    finally:
        kernel.close()
