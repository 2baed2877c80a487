"""A real ``podman container checkpoint --export`` archive: read, fixed, restored by podman.

podman 4.3 (Debian 12) with runc and the provisioned CRIU 4.1.1, isolated in
a test folder (tests/testbed/podman.py). The container runs the holder; its
export is zstd (podman's default) under a .tar.gz name. The export is then
made to carry another CRIU build's nr_req (k - 2, as in
tests/e2e/test_bug_reproduction.py), which ``podman container restore
--import`` with plain CRIU refuses (``wrong aio``); after ``criu-aio fix``
on the export the same command restores the container and every ring works.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.harness import RingSpec, n_for_pages, verify_restored
from testbed.podman_export import Podman

from criu_aio_plugin.images.archive import Compression, fix_archive, read_archive

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


@pytest.fixture
def podman(tmp_path: Path, criu_bin: str) -> Iterator[Podman]:
    why = Podman.missing()
    if why is not None:
        pytest.skip(why)
    p = Podman(tmp_path / "podman", criu_bin)
    try:
        yield p
    finally:
        p.close()


def test_podman_export_fixed_then_restored_by_podman(podman: Podman, tmp_path: Path) -> None:
    rings = [RingSpec(n_for_pages(2), 1), RingSpec(n_for_pages(4))]
    c = podman.start("aio-holder", rings)
    before = c.reports(["root"])
    export = tmp_path / "aio-holder.tar.gz"
    podman.run("container", "checkpoint", "--export", str(export), c.name)
    podman.run("rm", c.name)

    cp = read_archive(export)
    assert cp.compression is Compression.ZSTD  # podman's default, whatever the name says
    assert cp.container is not None
    assert (cp.container.name, cp.container.engine, cp.container.runtime) == (
        "aio-holder",
        "podman",
        "runc",
    )
    assert cp.container.image.endswith("criu-aio-holder:1")
    dumped = {(r.ring_id, r.ring_len) for r in cp.rings}
    assert dumped == {(r.address, r.ring_len) for r in before["root"].rings}

    # Another CRIU build's nr_req: podman's restore with plain CRIU fails.
    forged = {(r.file, r.ring_id): (r.ring_len - 32) // 32 - 2 for r in cp.rings}
    fix_archive(export, forged)
    refused = podman.run("container", "restore", "--import", str(export), check=False)
    assert refused.returncode != 0
    log = re.search(r"log file: (\S+)", refused.stderr)
    assert log is not None, refused.stderr
    assert "wrong aio" in Path(log[1]).read_text()
    podman.remove_all()  # a refused restore leaves the container created

    # `criu-aio fix` on the export, judged on this machine's live kernel.
    done = subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", "fix", str(export), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fixed = json.loads(done.stdout)
    assert fixed["fix"]["written"] and len(fixed["fix"]["changes"]) == len(rings)
    assert fixed["archive"]["container"]["name"] == "aio-holder"
    again = read_archive(export)
    assert again.compression is Compression.ZSTD
    # The estimator's choice (the smallest nr_req that recreates each ring here),
    # not the forged one; the restore below proves it right.
    assert all(r.nr_req != forged[(r.file, r.ring_id)] for r in again.rings)
    podman.run("container", "restore", "--import", str(export))
    after = c.reports(["root"])
    exercised = c.reports(["root"], exercise=True)
    verify_restored(before, after, exercised)
