"""Fleet placement cost: can-restore and --k8s-affinity for big checkpoints.

A checkpoint of N mm images (synthetic, CRIU's layout, 1-4 rings each of 1-16
pages) is judged against every simulated-kernel preset's profile (10 hosts),
in one run:

- read: read_rings over the N images (what can-restore and inspect do first);
- place: place_all over the 10 profiles (profile -> simulated kernel ->
  decision.judge), the rings already read;
- affinity: node_affinity for the same rings;
- cli: `criu-aio can-restore DIR --profiles-dir D` end to end (a new process).

There is no stated target for placement; DESIGN section 5 asks fix/inspect of
1,000 mm images to take under one second, and can-restore should stay in the
same range. Run: python benchmarks/bench_fleet.py [--images N] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from criu_aio_plugin.estimator.profile import profile_document
from criu_aio_plugin.fleet import k8s, placement, profiles
from criu_aio_plugin.images import synthetic
from criu_aio_plugin.images.mm import read_rings
from criu_aio_plugin.kernel.simulated import PRESETS


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _checkpoint(directory: Path, images: int) -> None:
    rnd = random.Random(7)
    for pid in range(1000, 1000 + images):
        pages = [rnd.randint(1, 16) for _ in range(rnd.randint(1, 4))]
        rings = synthetic.rings_for(pages)
        (directory / f"mm-{pid}.img").write_bytes(synthetic.mm_image_bytes(rings, seed=pid))


def _profiles(directory: Path) -> list[profiles.HostProfile]:
    for name, make in PRESETS.items():
        kernel = make()
        try:
            (directory / f"{name}.json").write_text(json.dumps(profile_document(kernel)))
        finally:
            kernel.close()
    return profiles.load_dir(directory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, profile_dir = Path(tmp, "images"), Path(tmp, "profiles")
        images.mkdir()
        profile_dir.mkdir()
        _checkpoint(images, args.images)
        hosts = _profiles(profile_dir)
        rings = read_rings(images)
        lens = [r.ring_len for r in rings]
        rows = [
            ("read_rings", _median_ms(lambda: read_rings(images), args.reps)),
            ("place_all", _median_ms(lambda: placement.place_all(rings, hosts), args.reps)),
            ("node_affinity", _median_ms(lambda: k8s.node_affinity(lens), args.reps)),
            (
                "cli can-restore",
                _median_ms(
                    lambda: subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "criu_aio_plugin",
                            "can-restore",
                            str(images),
                            "--profiles-dir",
                            str(profile_dir),
                        ],
                        capture_output=True,
                        check=False,
                    ),
                    args.reps,
                ),
            ),
        ]
        print(
            f"{args.images} mm images, {len(rings)} rings "
            f"({len(set(lens))} distinct sizes), {len(hosts)} host profiles; "
            f"median of {args.reps}"
        )
        for name, ms in rows:
            print(f"  {name:<16} {ms:9.2f} ms")
        per_host = rows[1][1] / len(hosts)
        print(
            f"  place_all per host {per_host:.2f} ms; cli / 1000 ms target: {rows[3][1] / 1000:.2f}"
        )


if __name__ == "__main__":
    main()
