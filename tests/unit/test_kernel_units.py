"""Pure units of the kernel layer and the model cache (no io_setup)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.estimator.check import compact_ranges, default_max_pages
from criu_aio_plugin.estimator.model import (
    CACHE_FILE,
    Knowledge,
    ModelStore,
    RingModel,
    fit_model,
)
from criu_aio_plugin.kernel.arithmetic import RingArithmetic
from criu_aio_plugin.kernel.host import parse_cpu_list
from criu_aio_plugin.kernel.interface import HostFacts
from criu_aio_plugin.kernel.syscalls import AioSyscalls, syscall_numbers


class FakeLibc:
    """Stands in for libc: records syscall(2) calls and fails with a chosen errno."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.fail = fail

    def syscall(self, number: int, *args: int) -> int:
        self.calls.append((number, *args))
        if self.fail:
            return -1
        ctypes.c_ulong.from_address(args[1]).value = 0xDEAD000
        return 0

    def get_errno(self) -> int:
        return self.fail


def test_syscalls_use_the_arch_numbers_and_raise_oserror() -> None:
    libc = FakeLibc()
    sysc = AioSyscalls(libc=libc, machine="x86_64")
    assert sysc.io_setup(5) == 0xDEAD000
    assert libc.calls[0][:2] == (206, 5) and len(libc.calls[0]) == 6
    failing = AioSyscalls(libc=FakeLibc(fail=errno.EAGAIN), machine="aarch64")
    with pytest.raises(OSError) as info:
        failing.io_setup(7)
    assert info.value.errno == errno.EAGAIN and info.value.filename == "io_setup"
    assert syscall_numbers("aarch64").io_setup == 0
    with pytest.raises(OSError):
        syscall_numbers("vax")


@pytest.mark.parametrize(
    ("text", "count"), [("0", 1), ("0-1", 2), ("0-3,8-11\n", 8), ("0,2,4-5", 4), ("0-4095", 4096)]
)
def test_cpu_list(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count


@pytest.mark.parametrize("text", ["", "a-b", "3-1"])
def test_bad_cpu_list(text: str) -> None:
    with pytest.raises(KernelError):
        parse_cpu_list(text)


def test_compact_ranges() -> None:
    assert compact_ranges([5, 1, 2, 3, 7, 8]) == "1-3, 5, 7-8"
    assert compact_ranges([]) == ""


def test_default_max_pages() -> None:
    assert default_max_pages(4096) == 129
    assert default_max_pages(65536) == 9


def test_fit_model_prefers_modern_and_detects_no_doubling() -> None:
    facts = HostFacts("r", "b", 4096, 2, 65536, 0)
    modern = RingArithmetic(possible_cpus=2)
    old = RingArithmetic(possible_cpus=2, doubling=False, floor_per_cpu=0)
    for arith in (modern, old):
        obs = {n: arith.ring_len(n) for n in (1, 372)}
        model = fit_model(facts, obs)
        assert model is not None and model.arithmetic.doubling == arith.doubling
    assert fit_model(facts, {1: 12345}) is None


def test_nr_req_range_is_exact() -> None:
    model = RingModel(RingArithmetic(possible_cpus=2))
    lo, hi = model.nr_req_range(2 * 4096) or (0, 0)
    assert model.ring_len(lo) == model.ring_len(hi) == 8192
    assert model.ring_len(lo - 1) == 4096 and model.ring_len(hi + 1) == 12288
    assert model.nr_req_range(4096 + 1) is None


class FakeLive:
    """Just enough of a live kernel for the cache: is_live and facts."""

    name = "live"
    is_live = True

    def __init__(self, boot: str = "boot-1") -> None:
        self._facts = HostFacts("6.1.0", boot, 4096, 2, 65536, 0)

    def facts(self) -> HostFacts:
        return self._facts

    def probe(self, nr_req: int) -> Any:
        raise AssertionError("the cache never probes")

    def close(self) -> None:
        pass


def _knowledge() -> Knowledge:
    arith = RingArithmetic(possible_cpus=2)
    know = Knowledge(model=RingModel(arith))
    for n in (1, 62, 190):
        know.observe(n, arith.ring_len(n))
    return know


def test_cache_round_trip_and_per_boot(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    kernel = FakeLive()
    assert store.save(kernel, _knowledge())
    assert (tmp_path / CACHE_FILE).exists()
    loaded = store.load(kernel)
    assert loaded.from_cache and loaded.model is not None
    assert loaded.observed == {1: 4096, 62: 4096, 190: 12288}
    assert store.load(FakeLive(boot="boot-2")).observed == {}  # another boot: ignored
    assert os.listdir(tmp_path) == [CACHE_FILE]  # no temp files left behind


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"schema": "x"}),
        json.dumps(["list"]),
        "",
    ],
)
def test_corrupt_cache_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / CACHE_FILE).write_text(content)
    assert ModelStore(str(tmp_path)).load(FakeLive()).observed == {}


def test_cache_with_lying_model_keeps_observations_only(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    kernel = FakeLive()
    store.save(kernel, _knowledge())
    doc = json.loads((tmp_path / CACHE_FILE).read_text())
    doc["arithmetic"]["doubling"] = False  # no longer predicts the observations
    (tmp_path / CACHE_FILE).write_text(json.dumps(doc))
    loaded = store.load(kernel)
    assert loaded.model is None and loaded.observed[190] == 12288


def test_cache_in_unsafe_directory_is_not_used(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    store = ModelStore(str(tmp_path))
    assert not store.save(FakeLive(), _knowledge())
    assert not (tmp_path / CACHE_FILE).exists()


def test_non_live_kernels_never_touch_disk(tmp_path: Path) -> None:
    from criu_aio_plugin.kernel.simulated import modern

    store = ModelStore(str(tmp_path))
    assert not store.save(modern(2), _knowledge())
    assert os.listdir(tmp_path) == []
