"""AgentKernel's pipe layer against real processes: the agent, and shell scripts
that misbehave the ways a remote agent can (noise, silence, death, old protocol).
"""

from __future__ import annotations

import errno
import gc
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_build import build_agent

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.kernel.agent import AgentKernel, find_agent
from criu_aio_plugin.kernel.interface import BatchProber, BudgetSettler, Kernel

HELLO = "criu-aio-probe protocol=1 version=fake"


@pytest.fixture(scope="module")
def agent_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent(tmp_path_factory.mktemp("agent"))


def sh(script: str) -> str:
    return f"sh -c {shlex.quote(script)}"


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0); /proc/PID/stat says Z
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
                return True
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.05)
    return False


def pid_from(path: Path) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path} never got a pid")


def test_is_a_kernel_that_never_justifies_rewrites(agent_bin: Path) -> None:
    kernel = AgentKernel(str(agent_bin))
    assert isinstance(kernel, Kernel)
    assert isinstance(kernel, BatchProber) and isinstance(kernel, BudgetSettler)
    assert kernel.is_live is False
    assert kernel.name == f"agent:{agent_bin}"
    kernel.close()  # never started: nothing to do


def test_noise_before_the_hello_is_skipped(agent_bin: Path) -> None:
    cmd = sh(f"echo 'Linux version 6.1 booting'; printf 'half a line'; exec {agent_bin}")
    with AgentKernel(cmd) as kernel:
        facts = kernel.facts()
        assert facts.possible_cpus == os.cpu_count() or facts.possible_cpus >= 1
        assert kernel.hello is not None and kernel.hello.pairs["protocol"] == "1"


def test_agent_exiting_before_hello_names_status_and_stderr() -> None:
    kernel = AgentKernel(sh("echo 'ssh: connect to host nowhere: refused' >&2; exit 255"))
    with pytest.raises(KernelError) as info:
        kernel.facts()
    text = str(info.value)
    assert "exit status 255" in text and "connect to host nowhere" in text
    assert info.value.errno == errno.EPROTO
    # broken for good: the same error again, no second start
    with pytest.raises(KernelError, match="before its hello"):
        kernel.probe(1)
    kernel.close()


def test_command_that_cannot_start() -> None:
    with pytest.raises(KernelError) as info:
        AgentKernel("/nonexistent/criu-aio-probe").facts()
    assert info.value.errno == errno.ENOENT


def test_silent_agent_times_out_and_its_whole_group_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; echo '{HELLO}'; wait"
    kernel = AgentKernel(sh(script), reply_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(KernelError, match="timed out waiting for its reply to 'facts'"):
        kernel.facts()
    assert time.monotonic() - started < 10
    assert gone(pid_from(pids)), "the agent's child outlived the timeout"
    kernel.close()


def test_startup_timeout_is_bounded() -> None:
    kernel = AgentKernel(sh("echo booting; exec sleep 60"), startup_timeout=0.5)
    with pytest.raises(KernelError, match="timed out waiting for its hello"):
        kernel.facts()
    kernel.close()


def test_other_protocol_version_is_refused() -> None:
    kernel = AgentKernel(sh("echo 'criu-aio-probe protocol=7 version=7.0'; exec sleep 60"))
    with pytest.raises(KernelError) as info:
        kernel.facts()
    assert info.value.errno == errno.EPROTONOSUPPORT
    kernel.close()


def test_agent_dying_mid_session() -> None:
    script = f"echo '{HELLO}'; read line; exit 9"
    kernel = AgentKernel(sh(script))
    with pytest.raises(KernelError, match="closed its output") as info:
        kernel.probe(1)
    assert "exit status 9" in str(info.value)


def test_garbage_reply_is_a_protocol_error() -> None:
    facts = "facts page_size=4096 possible_cpus=2 aio_nr=0 aio_max_nr=65536"
    script = (
        f"echo '{HELLO}'; read line; echo '{facts}'; "
        "read line; echo 'ring nr_req=2 errno=0 ring_len=4096 nr=127'"
    )
    kernel = AgentKernel(sh(script))
    with pytest.raises(KernelError, match=r"io_setup\(2\) when asked for io_setup\(1\)"):
        kernel.probe(1)
    kernel.close()


def test_close_kills_an_agent_that_ignores_quit(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; echo '{HELLO}'; exec sleep 60"
    kernel = AgentKernel(sh(script), quit_timeout=0.5)
    kernel._start()  # the hello is all this fake agent answers
    pid = pid_from(pids)
    kernel.close()
    assert gone(pid)


@pytest.mark.parametrize("drop", [lambda k: None, lambda k: k.close()])
def test_dropped_kernel_leaves_no_process(
    tmp_path: Path, drop: Callable[[AgentKernel], None]
) -> None:
    pids = tmp_path / "pids"
    kernel = AgentKernel(sh(f"echo $$ > {pids}; echo '{HELLO}'; exec sleep 60"), quit_timeout=0.5)
    kernel._start()
    pid = pid_from(pids)
    drop(kernel)
    del kernel
    gc.collect()
    assert gone(pid)


def test_real_agent_session(agent_bin: Path) -> None:
    with AgentKernel([str(agent_bin)]) as kernel:
        first = kernel.facts()
        assert first.page_size == os.sysconf("SC_PAGE_SIZE")
        assert first.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert first.kernel_release == os.uname().release
        assert kernel.hostname == os.uname().nodename
        # out-of-range values never reach the agent; io_setup(0) does, and fails
        bad = kernel.probe_many([-1, 1 << 32, 0])
        assert [p.errno for p in bad] == [errno.EINVAL] * 3
        assert kernel.kept == 0
        got = kernel.probe_many([1, 2, 3])
        assert all(p.ok for p in got) and kernel.kept == 3 and kernel.charge == 6
        assert kernel.release() == 3
        assert kernel.kept == 0 and kernel.charge == 0


def test_empty_command_finds_the_agent(agent_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIU_AIO_PROBE", str(agent_bin))
    assert find_agent() == str(agent_bin)
    with AgentKernel() as kernel:
        assert kernel.facts().page_size > 0


def test_find_agent_rejects_a_bad_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIU_AIO_PROBE", "/nonexistent/probe")
    with pytest.raises(KernelError, match="CRIU_AIO_PROBE"):
        find_agent()
