"""``criu-aio swrk`` and the paths its client names: never blocked, never refused for them.

In swrk mode we already are the client (and CRIU will be too), so a config
file that is a FIFO, a device or too large is not refused: criu-aio cannot
know whether it sets images-dir, leaves the images alone and hands over,
without opening it (a FIFO's open would wait for a writer forever).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.guards import fails_if_blocked
from testbed.swrk_child import run_swrk

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.images import synthetic
from criu_aio_plugin.rpc import peer_files


@pytest.fixture(autouse=True)
def never_blocks() -> Iterator[None]:
    with fails_if_blocked(60):
        yield


def _config(tmp_path: Path, what: str) -> str:
    path = tmp_path / "c.conf"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "device":
        return "/dev/zero"
    elif what == "big":
        path.write_bytes(b"#" * (peer_files.CONFIG_LIMIT + 1))
    else:
        path.write_text("images-dir /elsewhere\n")
    return str(path)


@pytest.mark.parametrize("what", ["fifo", "device", "big", "sets-images-dir"])
def test_config_file_it_cannot_or_should_not_read_is_handed_over(tmp_path: Path, what: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    # a 1-page ring cannot exist on the simulated 64-CPU kernel: if criu-aio
    # examined the images it would refuse (no exec): handing over proves it did not
    ring = synthetic.rings_for([1])
    (images / "mm-10.img").write_bytes(synthetic.mm_image_bytes(ring, 20, 10))
    req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
    req.opts.images_dir_fd = -1
    req.opts.images_dir = str(images)
    req.opts.config_file = _config(tmp_path, what)
    data = req.SerializeToString()
    report = run_swrk(data, tmp_path, {"CRIU_AIO_KERNEL": "sim:cpus=64"})
    assert bytes.fromhex(str(report["queued"])) == data
    assert report["argv"][:2] == ["/bin/true", "swrk"]  # type: ignore[index]
