"""Reading checkpoint archives: formats by content, layouts, metadata, hostile input.

The images are synthetic (criu_aio_plugin.images.synthetic); tests/e2e holds
the same checks on real CRIU dumps.
"""

from __future__ import annotations

import os
import re
import tarfile
import time
from pathlib import Path

import pytest
from testbed import archives
from testbed.archives import Container

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import mm
from criu_aio_plugin.images.archive import Compression, Limits, read_archive
from criu_aio_plugin.images.archive.read import scan_archive
from criu_aio_plugin.images.archive.streams import PlainSource
from criu_aio_plugin.images.archive.tarformat import TarWalker

RINGS = {101: [1, 3], 102: [2], 103: [1, 1, 8]}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return archives.synthetic_images(tmp_path / "images", RINGS)


def _ring_keys(rings: list[mm.ImageRing]) -> list[tuple[str, int, int, int, int]]:
    return [(r.file, r.pid, r.ring_id, r.nr_req, r.ring_len) for r in rings]


@pytest.mark.parametrize("tool", ["python", "gnu-tar"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_archive_rings_are_the_directory_rings(
    images: Path, tmp_path: Path, tool: str, compression: str
) -> None:
    # podman names its export .tar.gz whatever the compression: content decides.
    path = archives.podman_archive(images, tmp_path, compression, tool=tool)
    cp = read_archive(path)
    assert cp.compression is Compression(compression)
    assert cp.images_prefix == "checkpoint/"
    assert _ring_keys(cp.rings) == _ring_keys(mm.read_rings(images))
    assert all(r.path == f"{path}:checkpoint/{r.file}" for r in cp.rings)
    assert [p.pid for p in cp.processes] == sorted(RINGS)
    assert cp.img_version == 2
    assert cp.container is not None
    assert (cp.container.name, cp.container.image, cp.container.runtime) == (
        "aio-holder",
        "localhost/busybox-aio:latest",
        "crun",
    )
    assert cp.container.engine == "podman"


def test_kubelet_archive_names_pod_and_namespace(images: Path, tmp_path: Path) -> None:
    c = Container(name="counter", pod="counters", namespace="default", runtime="runc")
    path = archives.kubelet_archive(images, tmp_path, c)
    assert path.name.startswith("checkpoint-counters_default-counter-")
    cp = read_archive(path)
    assert cp.compression is Compression.NONE
    info = cp.container
    assert info is not None
    assert (info.name, info.pod, info.namespace, info.engine) == (
        "counter",
        "counters",
        "default",
        "cri-o",
    )
    assert info.describe() == (
        "counter (localhost/busybox-aio:latest, runc, cri-o; pod default/counters)"
    )


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_of_an_images_directory_is_read_at_the_top_level(
    images: Path, tmp_path: Path, fmt: int
) -> None:
    path = archives.tar_folder(images, tmp_path / "images.tar", fmt=fmt)
    cp = read_archive(path)
    assert cp.images_prefix == ""
    assert cp.container is None
    assert _ring_keys(cp.rings) == _ring_keys(mm.read_rings(images))


def test_long_names_and_pax_records_are_followed(tmp_path: Path, images: Path) -> None:
    # A deep artifacts path (GNU long name / pax path) and non-ASCII names.
    root = archives.stage(images, tmp_path / "root", archives.podman_metadata(Container()))
    deep = root / "artifacts" / ("d" * 120) / "é"
    deep.mkdir(parents=True)
    (deep / "x").write_bytes(b"x")
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = archives.tar_folder(root, tmp_path / f"long-{fmt}.tar", fmt=fmt)
        scan = scan_archive(path)
        with tarfile.open(path) as tf:
            expected = [(m.name, m.offset, m.offset_data, m.size) for m in tf]
        got = [(m.name.rstrip("/"), m.offset, m.data_offset, m.size) for m in scan.members]
        assert got == expected


def test_walker_agrees_with_tarfile_on_gnu_tar_output(images: Path, tmp_path: Path) -> None:
    path = archives.kubelet_archive(images, tmp_path, tool="gnu-tar")
    with open(path, "rb") as f:
        walker = TarWalker(PlainSource(f.fileno(), path.stat().st_size, str(path)), str(path))
        got = [
            (m.name.rstrip("/"), m.offset, m.data_offset, m.size, m.typeflag)
            for m in walker.members()
        ]
    with tarfile.open(path) as tf:
        expected = [(m.name, m.offset, m.offset_data, m.size, m.type) for m in tf]
    assert got == expected
    assert walker.end > 0


def test_page_files_are_never_read(images: Path, tmp_path: Path) -> None:
    """A 10 GB page member (holes on disk) is skipped by offset: no read touches it."""
    members = archives.sound_members(images)
    big = archives._info("checkpoint/pages-2.img", archives.GB10)
    at = len(members) // 2
    members.insert(at, (big, b""))
    path = archives.write_tar(tmp_path / "big.tar", members)
    assert path.stat().st_size > archives.GB10
    assert path.stat().st_blocks * 512 < 64 << 20  # sparse on disk
    trace: list[tuple[int, int]] = []
    start = time.perf_counter()
    cp = read_archive(path, trace=trace)
    elapsed = time.perf_counter() - start
    pages = [m for m in cp.scan.members if "/pages-" in m.name]
    assert len(pages) == 2
    for m in pages:
        for pos, length in trace:
            assert pos + length <= m.data_offset or pos >= m.data_offset + m.stored, (m.name, pos)
    read = sum(length for _, length in trace)
    wanted = sum(m.stored for m, _ in cp.scan.wanted.values())
    assert read <= wanted + 512 * (len(cp.scan.members) + 8)  # headers and data of what is read
    assert elapsed < 2.0


def test_caps_on_what_is_read(images: Path, tmp_path: Path) -> None:
    path = archives.kubelet_archive(images, tmp_path)
    with pytest.raises(ImageError, match=r"checkpoint/mm-101\.img: \d+ bytes, more than the 100"):
        read_archive(path, Limits(mm=100))
    with pytest.raises(ImageError, match=r"more than 1000 bytes of images and metadata"):
        read_archive(path, Limits(total=1000))


def test_a_directory_symlink_and_a_fifo_are_not_archives(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ImageError, match="not a regular file"):
        read_archive(tmp_path / "fifo")
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(ImageError, match="neither an images directory nor"):
        read_archive(tmp_path / "empty.tar")


def test_archive_without_images_is_refused(tmp_path: Path) -> None:
    path = archives.write_tar(
        tmp_path / "meta-only.tar",
        [(archives._info("config.dump", 2), b"{}")],
    )
    with pytest.raises(ImageError, match=r"no CRIU images"):
        read_archive(path)


def test_images_at_two_levels_are_refused(images: Path, tmp_path: Path) -> None:
    members = archives.sound_members(images)
    mm_data = (images / "mm-101.img").read_bytes()
    members.append((archives._info("mm-101.img", len(mm_data)), mm_data))
    path = archives.write_tar(tmp_path / "two.tar", members)
    with pytest.raises(ImageError, match=r"both at the top level and in checkpoint/"):
        read_archive(path)


def test_unreadable_metadata_labels_but_does_not_stop(images: Path, tmp_path: Path) -> None:
    members = [
        (i, d) if i.name != "config.dump" else (archives._info("config.dump", 5), b"{nope")
        for i, d in archives.sound_members(images)
    ]
    cp = read_archive(archives.write_tar(tmp_path / "m.tar", members))
    assert cp.container is not None
    assert cp.container.problems and "config.dump: not JSON" in cp.container.problems[0]
    assert cp.container.pod == "web-7d9f"  # spec.dump still read
    assert len(cp.rings) == 6


def test_parent_link_of_an_incremental_dump_is_allowed(images: Path, tmp_path: Path) -> None:
    members = archives.sound_members(images)
    members.append(
        (archives._info("checkpoint/parent", type_=tarfile.SYMTYPE, link="../pre-checkpoint"), b"")
    )
    assert len(read_archive(archives.write_tar(tmp_path / "p.tar", members)).rings) == 6
    members[-1] = (
        archives._info("checkpoint/parent", type_=tarfile.SYMTYPE, link="../../elsewhere"),
        b"",
    )
    with pytest.raises(ImageError, match="outside the archive"):
        read_archive(archives.write_tar(tmp_path / "p2.tar", members))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, archives.Hostile]:
    work = tmp_path_factory.mktemp("hostile")
    images = archives.synthetic_images(work / "images", RINGS)
    return archives.hostile_archives(images, work / "archives")


HOSTILE = [
    "traversal",
    "absolute",
    "symlink-image",
    "hardlink-image",
    "symlink-escapes",
    "images-folder-link",
    "fifo",
    "device",
    "duplicate",
    "lying-last",
    "lying-middle",
    "no-end-block",
    "cut-header",
    "bad-checksum",
    "global-path",
    "sparse-10g-gnu",
    "sparse-10g-posix",
    "truncated-gzip",
    "truncated-gzip-trailer",
    "corrupt-gzip",
    "truncated-zstd",
    "lying-middle-gzip",
    "xz",
    "garbage",
]


def test_every_hostile_case_is_built(hostile: dict[str, archives.Hostile]) -> None:
    assert sorted(hostile) == sorted(HOSTILE)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_gets_a_clear_error(
    hostile: dict[str, archives.Hostile], case: str
) -> None:
    h = hostile[case]
    start = time.perf_counter()
    with pytest.raises(ImageError) as info:
        read_archive(h.path)
    assert time.perf_counter() - start < 5.0
    text = str(info.value)
    assert re.search(h.message, text), text
    assert str(h.path) in text
    if h.member is not None:
        assert f"{h.path}:{h.member}" in text, text
