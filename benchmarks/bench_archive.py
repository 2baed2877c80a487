"""Benchmark: inspecting a checkpoint archive against its extracted directory and against tar.

A checkpoint with 2 GB of pages (synthetic mm images with AIO rings, a page
file of mixed content: random, zero, text-like and pointer-like pages, about
what process memory compresses to) is packed the way the engines pack it:
the kubelet's uncompressed tar, podman's gzip and zstd exports. Side by side
in one run, each the median of several runs (warm page cache):

- ``criu-aio inspect DIR`` on the extracted checkpoint/ folder vs
  ``criu-aio inspect ARCHIVE.tar``: the page file is skipped by offset, so
  both should cost about the same (the interpreter start dominates);
- ``criu-aio inspect ARCHIVE.tar.gz`` vs ``tar -xzOf ARCHIVE.tar.gz >
  /dev/null`` (tar extracting every member to /dev/null) and ``gzip -dc``:
  a compressed archive has to be decompressed, so this is bounded by that;
- the same for zstd (podman's default).

The in-process library calls (``read_rings`` on the directory,
``read_archive`` on each archive) are printed too, to separate criu-aio's
work from the command's start-up; and ``fix_archive(..., output=NEW)`` with
every ring rewritten, against copying (tar) or recompressing (gzip, zstd) the
archive by hand. ``--kernel`` selects what inspect judges
against (default ``sim:cpus=2``: no io_setup probing in the timings).

usage: python benchmarks/bench_archive.py [--pages-mb N] [--runs N] [--fix-runs N]
                                          [--dir D] [--kernel SPEC]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from criu_aio_plugin.images import mm, synthetic
from criu_aio_plugin.images.archive import fix_archive, read_archive

PAGE = 4096
BLOCK_PAGES = 4096  # 16 MiB written at a time


def _page_block(rnd_pages: bytes) -> bytes:
    """16 MiB of pages: a quarter each random, zero, text-like and pointer-like."""
    text = (b"GET /index.html HTTP/1.1\r\nHost: example\r\n" * 100)[:PAGE]
    out = bytearray()
    r = 0
    for i in range(BLOCK_PAGES):
        kind = i % 4
        if kind == 0:
            out += rnd_pages[r : r + PAGE]
            r += PAGE
        elif kind == 1:
            out += bytes(PAGE)
        elif kind == 2:
            out += text
        else:
            base = 0x7F00_0000_0000 + i * 64
            out += b"".join((base + 8 * j).to_bytes(8, "little") for j in range(PAGE // 8))
    return bytes(out)


def make_checkpoint(root: Path, pages_mb: int) -> Path:
    """root/checkpoint/ (images) and metadata, as an engine stages it before packing."""
    images = root / "checkpoint"
    images.mkdir(parents=True)
    for pid in range(1, 9):
        data = synthetic.mm_image_bytes(synthetic.rings_for([1, 2, 4]), 300, pid)
        (images / f"mm-{pid}.img").write_bytes(data)
    with open(images / "pages-1.img", "wb") as f:
        for _ in range(pages_mb // 16):
            f.write(_page_block(os.urandom(PAGE * BLOCK_PAGES // 4)))
    (root / "config.dump").write_text(
        '{"name": "bench", "rootfsImageName": "x", "runtime": "runc"}'
    )
    (root / "spec.dump").write_text('{"annotations": {}}')
    return images


def _sh(cmd: str) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(cmd, shell=True, check=True)

    return run


def _cli(*args: str) -> Callable[[], object]:
    def run() -> object:
        done = subprocess.run(
            [sys.executable, "-m", "criu_aio_plugin", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 3, 4, 5):
            raise SystemExit(f"criu-aio {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    return run


def _median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages-mb", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--kernel", default="sim:cpus=2")
    ap.add_argument("--fix-runs", type=int, default=1, help="runs of the fix rows (0: skip)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        images = make_checkpoint(work / "staged", args.pages_mb)
        tar = work / "checkpoint-bench_default-bench-2026-11-01T10:00:00Z.tar"
        subprocess.run(["tar", "-C", str(work / "staged"), "-cf", str(tar), "."], check=True)
        gz = work / "export-gzip.tar.gz"
        zst = work / "export-zstd.tar.gz"  # podman's name, zstd content
        subprocess.run(f"gzip -6 -c {tar} > {gz}", shell=True, check=True)
        subprocess.run(["zstd", "-q", "-3", "-f", str(tar), "-o", str(zst)], check=True)
        print(
            f"built in {time.perf_counter() - t0:.0f} s: pages {args.pages_mb} MiB; "
            f"tar {tar.stat().st_size >> 20} MiB, gzip {gz.stat().st_size >> 20} MiB, "
            f"zstd {zst.stat().st_size >> 20} MiB; median of {args.runs} runs, warm cache"
        )
        k = ("--kernel", args.kernel)
        rows: list[tuple[str, str, Callable[[], object], Callable[[], object]]] = [
            (
                "inspect: directory vs uncompressed archive",
                "dir",
                _cli("inspect", str(images), *k),
                _cli("inspect", str(tar), *k),
            ),
            (
                "library: read_rings(dir) vs read_archive(tar)",
                "dir",
                lambda: mm.read_rings(images),
                lambda: read_archive(tar),
            ),
            (
                "inspect .tar.gz vs tar -xzOf > /dev/null",
                "tar",
                _sh(f"tar -xzOf {gz} > /dev/null"),
                _cli("inspect", str(gz), *k),
            ),
            (
                "inspect .tar.gz vs gzip -dc > /dev/null",
                "gzip",
                _sh(f"gzip -dc {gz} > /dev/null"),
                _cli("inspect", str(gz), *k),
            ),
            (
                "library: read_archive(.tar.gz) vs gzip -dc",
                "gzip",
                _sh(f"gzip -dc {gz} > /dev/null"),
                lambda: read_archive(gz),
            ),
            (
                "inspect .tar.zst vs tar --zstd -xOf > /dev/null",
                "tar",
                _sh(f"tar --zstd -xOf {zst} > /dev/null"),
                _cli("inspect", str(zst), *k),
            ),
            (
                "inspect .tar.zst vs zstd -dc > /dev/null",
                "zstd",
                _sh(f"zstd -q -dc {zst} > /dev/null"),
                _cli("inspect", str(zst), *k),
            ),
        ]
        print(f"{'comparison':50} {'baseline':>10} {'criu-aio':>10} {'ratio':>7}")
        for title, _, base, ours in rows:
            b = _median(base, args.runs)
            o = _median(ours, args.runs)
            print(f"{title:50} {b:9.3f}s {o:9.3f}s {o / b:6.2f}x")
        if args.fix_runs:
            # fix --output of each archive, every ring rewritten, against copying
            # (plain) or recompressing (gzip, zstd) the same archive by hand.
            out = work / "fixed"
            fixes = [
                ("fix --output tar vs cp", tar, f"cp {tar} {out}"),
                (
                    "fix --output .tar.gz vs gzip -dc | gzip -6",
                    gz,
                    f"gzip -dc {gz} | gzip -6 > {out}",
                ),
                (
                    "fix --output .tar.zst vs zstd -dc | zstd -3",
                    zst,
                    f"zstd -q -dc {zst} | zstd -q -3 > {out}",
                ),
            ]
            for title, path, shell in fixes:
                rings = read_archive(path).rings
                want = {(r.file, r.ring_id): r.nr_req + 1 for r in rings}

                def fix(path: Path = path, want: dict[tuple[str, int], int] = want) -> None:
                    out.unlink(missing_ok=True)
                    Path(f"{out}.criu-aio.journal").unlink(missing_ok=True)
                    fix_archive(path, want, output=out)

                def by_hand(shell: str = shell) -> None:
                    out.unlink(missing_ok=True)
                    subprocess.run(shell, shell=True, check=True)

                b = _median(by_hand, args.fix_runs)
                o = _median(fix, args.fix_runs)
                print(f"{title:50} {b:9.3f}s {o:9.3f}s {o / b:6.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
