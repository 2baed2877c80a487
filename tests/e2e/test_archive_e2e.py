"""Checkpoint archives of real CRIU dumps: read like their directory, fixed, restored.

The archives are built from real dumps of holder trees (tests/conftest.py) in
the layouts the engines write (tests/testbed/archives.py): the kubelet's
uncompressed ``checkpoint-<pod>_<namespace>-<container>-<timestamp>.tar``
and podman's ``--export`` (zstd by default, gzip). A fixed archive is then
extracted the way a runtime would and restored by the plain CRIU.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from images_helpers import criu_aio
from testbed import archives
from testbed.harness import (
    Checkpoint,
    Criu,
    PyCriu,
    RingSpec,
    criu_nr_req,
    n_for_pages,
    wait_gone,
)

from criu_aio_plugin.images import mm
from criu_aio_plugin.images.archive import Compression, fix_archive, read_archive, revert_archive

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def _keys(rings: list[mm.ImageRing]) -> list[tuple[str, int, int, int, int]]:
    return [(r.file, r.pid, r.ring_id, r.nr_req, r.ring_len) for r in rings]


def extract(archive: Path, into: Path) -> Path:
    """Unpack like a runtime importing the archive (GNU tar detects gzip/zstd itself)."""
    into.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True)
    return into / "checkpoint"


def test_archives_of_a_real_dump_read_like_its_directory(checkpoint: Any, tmp_path: Path) -> None:
    cp: Checkpoint = checkpoint(
        [n_for_pages(1), RingSpec(n_for_pages(3), 2), 500], children=1, grandchildren=1
    )
    expected = _keys(mm.read_rings(cp.images_dir))
    pids = sorted(rep.pid for rep in cp.before.values())
    built = [
        archives.kubelet_archive(cp.images_dir, tmp_path / "k-py"),
        archives.kubelet_archive(cp.images_dir, tmp_path / "k-gnu", tool="gnu-tar"),
        archives.podman_archive(cp.images_dir, tmp_path / "p-zstd", "zstd"),
        archives.podman_archive(cp.images_dir, tmp_path / "p-gzip", "gzip", tool="gnu-tar"),
    ]
    for path in built:
        got = read_archive(path)
        assert _keys(got.rings) == expected, path
        assert sorted(p.pid for p in got.processes) == pids
        assert got.img_version is not None and got.img_version > 0
        assert got.container is not None and got.container.name == "aio-holder"
    assert [read_archive(p).compression for p in built] == [
        Compression.NONE,
        Compression.NONE,
        Compression.ZSTD,
        Compression.GZIP,
    ]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_fixed_archive_restores_with_plain_criu(
    checkpoint: Any,
    pycriu: PyCriu,
    criu: Criu,
    tmp_path: Path,
    restore_and_verify: Any,
    compression: str,
) -> None:
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(2), 1), RingSpec(n_for_pages(4))])
    mm_image = cp.mm_image()
    # Another CRIU build's nr_req (k - 2), written with Debian's pycriu: CRIU's
    # restore here fails with `wrong aio` until the nr_req values are fixed.
    forged = {a["id"]: (a["ring_len"] - 32) // 32 - 2 for a in pycriu.aios(mm_image)}
    pycriu.set_nr_req(mm_image, forged)
    if compression == "none":
        path = archives.kubelet_archive(cp.images_dir, tmp_path / "a")
    else:
        path = archives.podman_archive(cp.images_dir, tmp_path / "a", compression)

    broken = extract(path, tmp_path / "broken")
    failed = criu.restore(broken, tmp_path / "broken.pid")
    assert not failed.ok and "wrong aio" in failed.log_text()
    assert wait_gone(cp.holder.pids.values()) == [], "the failed restore left processes"

    rings = read_archive(path).rings
    done = fix_archive(path, {(r.file, r.ring_id): criu_nr_req(r.ring_len) for r in rings})
    assert done.written and len(done.result.changes) == 2
    fixed = extract(path, tmp_path / "fixed")
    restore_and_verify(dataclasses.replace(cp, images_dir=fixed))

    # And --revert brings the forged (CRIU-written, here pycriu-written) bytes back.
    revert_archive(path)
    again = extract(path, tmp_path / "reverted")
    assert (again / mm_image.name).read_bytes() == mm_image.read_bytes()


SIM_HOSTS = ("x86-1", "x86-2", "x86-16", "x86-64", "x86-88", "v3.10", "arm64-64k")


def test_can_restore_on_real_archives_answers_as_on_the_directory(
    checkpoint: Any, pycriu: PyCriu, tmp_path: Path
) -> None:
    cp: Checkpoint = checkpoint(
        [n_for_pages(1), RingSpec(n_for_pages(3), 1), n_for_pages(6)], children=1
    )
    # One process with another build's nr_req: some hosts answer "with criu-aio".
    child = cp.mm_image("c0")
    pycriu.set_nr_req(child, {a["id"]: (a["ring_len"] - 32) // 32 - 2 for a in pycriu.aios(child)})
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for host in SIM_HOSTS:
        done = criu_aio("profile", "--json", "--kernel", f"sim:{host}")
        assert done.returncode == 0, done.stderr
        (profiles / f"{host}.json").write_text(done.stdout)
    done = criu_aio("profile", "--json")
    (profiles / "here.json").write_text(done.stdout)

    def answers(path: Path) -> tuple[int, dict[str, tuple[str, int]]]:
        done = criu_aio("can-restore", str(path), "--profiles-dir", str(profiles), "--json")
        assert done.returncode not in (1, 2), done.stderr
        doc = json.loads(done.stdout)
        return done.returncode, {h["host"]: (h["status"], h["exit_code"]) for h in doc["hosts"]}

    expected = answers(cp.images_dir)
    assert {s for s, _ in expected[1].values()} >= {"rewrite", "impossible"}
    for path in (
        archives.kubelet_archive(cp.images_dir, tmp_path / "k"),
        archives.podman_archive(cp.images_dir, tmp_path / "z", "zstd"),
        archives.podman_archive(cp.images_dir, tmp_path / "g", "gzip", tool="gnu-tar"),
    ):
        assert answers(path) == expected, path


def test_fix_command_on_an_archive_output_restore_and_revert(
    checkpoint: Any, pycriu: PyCriu, tmp_path: Path, restore_and_verify: Any
) -> None:
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(2), 1), RingSpec(n_for_pages(3))])
    mm_image = cp.mm_image()
    pycriu.set_nr_req(
        mm_image, {a["id"]: (a["ring_len"] - 32) // 32 - 2 for a in pycriu.aios(mm_image)}
    )
    source = archives.kubelet_archive(cp.images_dir, tmp_path / "a")
    before = source.read_bytes()
    dry = criu_aio("fix", str(source), "--dry-run")
    assert dry.returncode == 3, dry.stderr
    assert "would change mm-" in dry.stdout and source.read_bytes() == before
    fixed = tmp_path / "fixed.tar"
    done = criu_aio("fix", str(source), "--output", str(fixed))
    assert done.returncode == 0, done.stderr
    assert f"rewrote 1 mm image(s) in {fixed} (none)" in done.stdout
    assert source.read_bytes() == before  # --output leaves the source alone
    restore_and_verify(dataclasses.replace(cp, images_dir=extract(fixed, tmp_path / "x")))
    # Fixed archives need nothing more; --output of one is a byte copy.
    copy = tmp_path / "copy.tar"
    again = criu_aio("fix", str(fixed), "--output", str(copy))
    assert again.returncode == 0, again.stderr
    assert "nothing to change: wrote" in again.stdout and copy.read_bytes() == fixed.read_bytes()
    back = criu_aio("fix", str(fixed), "--revert")
    assert back.returncode == 0, back.stderr
    assert "restored 1 image(s) to their original bytes" in back.stdout
    assert fixed.read_bytes() == before
