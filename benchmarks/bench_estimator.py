"""Estimator cost on the live kernel: probes and wall time per checkpoint.

For 1, 4 and 64 distinct ring sizes (CRIU's nr_req stored, as after a dump), in
one run, side by side:

- criu formula: what CRIU does (no probe; right only where the formula is);
- naive: converge with sequential io_setup + io_destroy in this process, starting
  from CRIU's value (the seed's idea done directly);
- cold: criu-aio with an empty per-boot cache (probe worker fork, calibration,
  one confirming io_setup per size);
- cold, prestarted: the same with ``LiveKernel.prestart()`` called 10 ms before
  the clock starts (the interposer can fork the worker first, then read the
  request and the images while the worker comes up);
- warm: criu-aio with the per-boot cache filled by an earlier run (a new
  process's first call: new LiveKernel, cache read from disk).

1 and 4 sizes go through ``decision.judge`` (cache load, estimates, budget settle,
cache save: the restore's critical path). 64 distinct sizes need more fs.aio-nr
than the default fs.aio-max-nr (65536) holds, so no restore could use them; they
go through ``estimate_many`` to show how probing scales.

Targets (DESIGN.md section 5): warm, 4 ring sizes <= 1 ms; cold <= 5 ms.
Run: python benchmarks/bench_estimator.py [--reps N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from criu_aio_plugin.decision.judge import judge
from criu_aio_plugin.estimator.converge import RingRequest, estimate_many
from criu_aio_plugin.estimator.model import ModelStore
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel import host
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.kernel.live import LiveKernel
from criu_aio_plugin.kernel.syscalls import AioSyscalls, read_ring_header

PRESTART_OVERLAP = 0.010  # seconds of caller work between prestart() and the estimate


@dataclass
class Sample:
    seconds: float
    probes: int


def rings_for(count: int) -> list[ImageRing]:
    page = host.page_size()
    pages = [1 + (i * 7) % 129 for i in range(count)] if count < 64 else list(range(1, 65))
    return [
        ImageRing(
            f"/bench/mm-{1000 + i}.img",
            1000 + i,
            0x7F0000000000 + i * 0x100000,
            criu_formula(p * page),
            p * page,
        )
        for i, p in enumerate(pages)
    ]


def run_criu_formula(rings: list[ImageRing]) -> Sample:
    t = time.perf_counter()
    for r in rings:
        criu_formula(r.ring_len)
    return Sample(time.perf_counter() - t, 0)


def run_naive(rings: list[ImageRing]) -> Sample:
    sysc = AioSyscalls()
    probes = 0
    t = time.perf_counter()
    for r in rings:
        lo, hi, n = 0, None, max(1, criu_formula(r.ring_len))
        while True:
            ctx = sysc.io_setup(n)
            probes += 1
            _id, nr, _magic = read_ring_header(ctx)
            sysc.io_destroy(ctx)
            got = 32 + 32 * nr
            if got == r.ring_len:
                break
            if got < r.ring_len:
                lo = n
                n = n * 2 if hi is None else (n + hi) // 2
            else:
                hi = n
                n = (lo + n) // 2
            if hi is not None and hi - lo <= 1:
                break
    return Sample(time.perf_counter() - t, probes)


def _plan_or_estimate(kernel: LiveKernel, rings: list[ImageRing], store: ModelStore) -> None:
    if len(rings) <= 4:
        judge(kernel, rings, store=store)
        return
    know = store.load(kernel)
    requests = [RingRequest(r.ring_len, r.nr_req) for r in rings]
    estimate_many(kernel, requests, know, calibrate=know.model is None)
    store.save(kernel, know)


def run_criu_aio(rings: list[ImageRing], cache_dir: str, prestart: bool) -> Sample:
    kernel = LiveKernel()
    store = ModelStore(cache_dir)
    if prestart:
        kernel.prestart()
        time.sleep(PRESTART_OVERLAP)  # the caller's own work (request, images), off the clock
    t = time.perf_counter()
    _plan_or_estimate(kernel, rings, store)
    elapsed = time.perf_counter() - t
    kernel.close()
    kernel.settle(1 << 62)  # let the budget come back before the next rep (off the clock)
    return Sample(elapsed, kernel.probes)


def measure(fn: Callable[[], Sample], reps: int) -> tuple[float, float]:
    samples = [fn() for _ in range(reps)]
    return (
        statistics.median(s.seconds for s in samples),
        statistics.median(s.probes for s in samples),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--naive-reps", type=int, default=3)
    args = ap.parse_args()
    print(
        f"host: {host.kernel_release()}, {host.possible_cpus()} possible CPUs, "
        f"page {host.page_size()}, fs.aio-max-nr {host.read_aio_max_nr()}"
    )
    header = f"{'sizes':>5}  {'method':<20} {'median ms':>10} {'probes':>7} {'vs warm':>9}"
    print(header)
    print("-" * len(header))
    for count in (1, 4, 64):
        rings = rings_for(count)
        results: dict[str, tuple[float, float]] = {}
        results["criu formula"] = measure(lambda r=rings: run_criu_formula(r), args.reps)
        results["naive"] = measure(lambda r=rings: run_naive(r), args.naive_reps)

        def cold(prestart: bool, r: list[ImageRing] = rings) -> Sample:
            with tempfile.TemporaryDirectory() as d:
                return run_criu_aio(r, d, prestart)

        results["cold"] = measure(lambda: cold(False), args.reps)
        results["cold, prestarted"] = measure(lambda: cold(True), args.reps)
        with tempfile.TemporaryDirectory() as warm_dir:
            run_criu_aio(rings, warm_dir, False)  # fills the cache
            results["warm"] = measure(
                lambda d=warm_dir, r=rings: run_criu_aio(r, d, False), args.reps
            )
        warm = results["warm"][0]
        for name, (secs, probes) in results.items():
            ratio = f"{secs / warm:8.1f}x" if warm > 0 else "-"
            print(f"{count:>5}  {name:<20} {secs * 1e3:>10.3f} {probes:>7.0f} {ratio:>9}")
        print()
    print("targets: warm (4 sizes) <= 1 ms; cold <= 5 ms on the critical path")


if __name__ == "__main__":
    main()
