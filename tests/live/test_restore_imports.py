"""What ``criu-aio swrk`` imports on a RESTORE judged on the live kernel.

The restore path's budget (DESIGN.md section 5: +15 ms over CRIU alone) leaves
no room for protobuf or the slow parts of the standard library. A synthetic
checkpoint is judged on the live kernel twice: the first run (empty per-boot
cache) probes, saves the cache and may rewrite; the second finds every ring
confirmed and loads nothing heavy, not even ctypes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from testbed.swrk_child import run_swrk

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.images import synthetic

pytestmark = pytest.mark.live

HEAVY = {
    "dataclasses",
    "typing",
    "enum",
    "re",
    "json",
    "contextlib",
    "functools",
    "collections",
    "tempfile",
    "hashlib",
    "platform",
    "subprocess",
    "logging",
    "argparse",
    "importlib",
    "warnings",
}


def _restore(images: Path, cache: Path) -> set[str]:
    folder = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    try:
        req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
        req.opts.images_dir_fd = folder
        data = req.SerializeToString()
        report = run_swrk(data, images, {"CRIU_AIO_CACHE_DIR": str(cache)})
    finally:
        os.close(folder)
    assert bytes.fromhex(str(report["queued"])) == data  # handed over untouched
    modules = report["modules"]
    assert isinstance(modules, list)
    return set(modules)


def test_restore_on_the_live_kernel_imports_nothing_heavy(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    rings = synthetic.rings_for([1, 2, 3, 5])
    (images / "mm-4242.img").write_bytes(synthetic.mm_image_bytes(rings, 20, 4242))
    cold = _restore(images, cache)
    assert "criu_aio_plugin.kernel.live" in cold and "ctypes" in cold  # it probed
    assert not {m for m in cold if m.startswith(("google", "criu_aio_plugin._proto"))}
    # A rewrite (its directory lock, a context manager) may load contextlib.
    allowed_cold = {"contextlib", "functools", "collections"}
    never = HEAVY - allowed_cold
    assert not never & cold, sorted(never & cold)
    warm = _restore(images, cache)
    assert "criu_aio_plugin.decision.judge" in warm
    assert not HEAVY & warm, sorted(HEAVY & warm)
    assert "ctypes" not in warm  # every ring confirmed this boot: no probe worker
