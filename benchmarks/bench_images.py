"""Benchmark: inspect and fix of a 1,000-image checkpoint (target: <= 1 s each).

A synthetic checkpoint: 1,000 mm images, each with a few hundred VMAs and 4 AIO
rings (1, 2, 3 and 4 pages) whose nr_req is k - 2 (another CRIU build's
value), so every ring needs a rewrite on this host. Measured, each as the
median of several runs on a fresh copy:

- read: ``read_rings`` alone (open, read, validate 1,000 images);
- inspect: read plus the estimator's plan on the kernel (live by default);
- fix --dry-run: inspect plus computing and verifying all 1,000 new images;
- fix: the whole transaction (temps, fsyncs, journal, renames), all images changed;
- fix again: the idempotent re-run (nothing to do);
- revert: back to the original bytes.

Also printed: how many io_setup probes the plan made (rings of equal size share
one estimate) and the ratio of each median to the 1 s target.

usage: python benchmarks/bench_images.py [--images N] [--vmas N] [--runs N]
                                         [--kernel SPEC] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from criu_aio_plugin import status
from criu_aio_plugin.decision.checkpoint import Outcome, Session
from criu_aio_plugin.decision.decide import FIX, REPORT
from criu_aio_plugin.estimator.model import CACHE_ENV
from criu_aio_plugin.images import mm, rewrite, synthetic
from criu_aio_plugin.kernel.interface import Kernel
from criu_aio_plugin.kernel.select import kernel_from_spec

TARGET_S = 1.0
T = TypeVar("T")


def _make(src: Path, images: int, vmas: int) -> None:
    src.mkdir()
    for pid in range(1000, 1000 + images):
        rings = [
            synthetic.SynthRing(r.ring_id, r.ring_len, (r.ring_len - 32) // 32 - 2)
            for r in synthetic.rings_for([1, 2, 3, 4])
        ]
        (src / f"mm-{pid}.img").write_bytes(synthetic.mm_image_bytes(rings, vmas, pid))


def _fresh(src: Path, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    os.sync()
    return work


def _examine(work: Path, kernel: Kernel, *, write: bool, changes: bool = False) -> Outcome:
    """What `inspect`/`fix --dry-run` (write=False) and `fix` (write=True) do."""
    with Session(work, write=write) as cp:
        return cp.examine(kernel, intent=FIX if write else REPORT, changes=changes or write)


def _time(fn: Callable[[], object]) -> float:
    return _timed(fn)[0]


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--vmas", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel", default="live")
    ap.add_argument(
        "--dir",
        default="/var/tmp",
        help="where to build the checkpoint (default /var/tmp; /dev/shm separates "
        "criu-aio's own cost from the filesystem's file-creation cost)",
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-images-", dir=args.dir) as tmp:
        src = Path(tmp) / "src"
        _make(src, args.images, args.vmas)
        size = sum(p.stat().st_size for p in src.iterdir())
        print(
            f"checkpoint: {args.images} mm images, {args.vmas} VMAs and 4 rings each, "
            f"{size / 1e6:.1f} MB; kernel {args.kernel}; {args.runs} runs each",
            flush=True,
        )
        work = Path(tmp) / "work"
        _fresh(src, work)
        kernel = kernel_from_spec(args.kernel)
        probes: list[int] = []
        statuses: set[str] = set()
        results: dict[str, list[float]] = {k: [] for k in ("read", "inspect", "fix --dry-run")}
        results.update({"fix": [], "fix again": [], "revert": []})
        try:
            # First a plan with a cold model cache (a fresh boot): what the
            # estimator probes for 4,000 rings of 4 sizes.
            saved = os.environ.get(CACHE_ENV)
            os.environ[CACHE_ENV] = str(Path(tmp) / "cold-cache")
            cold_s, cold_outcome = _timed(lambda: _examine(work, kernel, write=False))
            cold = cold_outcome.judgement
            if saved is None:
                del os.environ[CACHE_ENV]
            else:
                os.environ[CACHE_ENV] = saved
            for _ in range(args.runs):
                results["read"].append(_time(lambda: mm.read_rings(work)))

                def inspect() -> None:
                    rep = _examine(work, kernel, write=False).judgement
                    probes.append(rep.probes)
                    # 4,000 rings need more than the default fs.aio-max-nr (65536):
                    # "budget" (the nr_req values are still known and written).
                    assert rep.status in (status.REWRITE, status.BUDGET), rep.status
                    statuses.add(rep.status.name)

                results["inspect"].append(_time(inspect))
                results["fix --dry-run"].append(
                    _time(lambda: _examine(work, kernel, write=False, changes=True))
                )
            if kernel.is_live:
                for _ in range(args.runs):
                    _fresh(src, work)
                    took, res = _timed(lambda: _examine(work, kernel, write=True))
                    results["fix"].append(took)
                    assert res.written and len(res.changes) == 4 * args.images
                    results["fix again"].append(_time(lambda: _examine(work, kernel, write=True)))
                    results["revert"].append(_time(lambda: rewrite.revert(work)))
                    assert (work / "mm-1000.img").read_bytes() == (src / "mm-1000.img").read_bytes()
        finally:
            kernel.close()
    print(f"{'step':<15} {'median s':>9} {'min s':>8} {'max s':>8} {'/ target':>9}")
    for name, times in results.items():
        if not times:
            print(f"{name:<15} {'(skipped: kernel is not live, fix writes nothing)':>9}")
            continue
        med = statistics.median(times)
        print(f"{name:<15} {med:9.3f} {min(times):8.3f} {max(times):8.3f} {med / TARGET_S:9.2f}")
    print(
        f"cold model cache: inspect {cold_s:.3f} s, {cold.probes} io_setup probes for "
        f"{len(cold.rings)} rings of 4 sizes"
    )
    print(f"io_setup probes per plan afterwards (warm cache): {probes}")
    print(f"checkpoint verdict: {', '.join(sorted(statuses))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
