"""`criu-aio check --images-dir` on a real CRIU dump, against several kernels.

The same checkpoint (rings of 1, 2 and 16 pages, dumped by the real CRIU here)
is restorable by CRIU alone on this host, needs criu-aio on a v3.10-style
kernel (no doubling: CRIU's nr_req maps half the 16-page ring), and cannot be
restored at all on a 64-CPU host (its smallest ring is 5 pages).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from images_helpers import criu_aio
from testbed.harness import n_for_pages

from criu_aio_plugin.cli import exitcodes

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def _check(images: str, kernel: str) -> tuple[int, dict[str, Any]]:
    done = criu_aio("check", "--aio-only", "--json", "--images-dir", images, "--kernel", kernel)
    return done.returncode, json.loads(done.stdout)


def test_check_a_real_checkpoint_on_three_kernels(checkpoint: Any) -> None:
    cp = checkpoint([n_for_pages(1), n_for_pages(2), n_for_pages(16)])
    images = str(cp.images_dir)

    code, doc = _check(images, "live")
    rings = doc["checkpoint"]["rings"]
    assert code == exitcodes.OK, doc
    assert sorted(r["ring_len"] for r in rings) == [4096, 8192, 16 * 4096]
    assert {r["status"] for r in rings} == {"fine"}

    code, doc = _check(images, "sim:v3.10")
    assert code == exitcodes.FIXABLE, doc
    by_len = {r["ring_len"]: r for r in doc["checkpoint"]["rings"]}
    assert by_len[16 * 4096]["status"] == "rewrite"
    assert by_len[16 * 4096]["nr_req"] != by_len[16 * 4096]["stored_nr_req"]
    assert by_len[4096]["status"] == "fine"

    code, doc = _check(images, "sim:cpus=64")
    assert code == exitcodes.IMPOSSIBLE, doc
    by_len = {r["ring_len"]: r for r in doc["checkpoint"]["rings"]}
    for small in (4096, 8192):
        assert by_len[small]["status"] == "impossible"
        assert "64 possible CPUs" in by_len[small]["reason"]
        assert "20480 bytes (5 pages)" in by_len[small]["reason"]
    assert by_len[16 * 4096]["status"] == "fine"
    assert "mm-" in doc["checkpoint"]["message"]
    # The same directory given positionally: the same verdict, as inspect gives it.
    positional = criu_aio("check", "--aio-only", "--json", images, "--kernel", "sim:cpus=64")
    assert positional.returncode == code
    assert json.loads(positional.stdout)["checkpoint"] == doc["checkpoint"]
    inspected = criu_aio("inspect", "--json", "-D", images, "--kernel", "sim:cpus=64")
    assert inspected.returncode == code
    assert json.loads(inspected.stdout) == doc["checkpoint"]
