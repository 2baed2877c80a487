"""Checkpoint archives for tests: the layouts podman and the kubelet write, and hostile ones.

- kubelet_archive(): the kubelet checkpoint API's layout (CRI-O, containerd):
  an uncompressed ``checkpoint-<pod>_<namespace>-<container>-<timestamp>.tar``
  with ``checkpoint/`` (the CRIU images) beside config.dump, spec.dump,
  rootfs-diff.tar, ... (DESIGN.md 3d), written by GNU tar or Python's tarfile.
- podman_archive(): podman's ``--export`` layout, gzip or zstd (podman's
  default, whatever the file name says) or none.
- hostile(): archives that must be refused, each built from a sound one.

The CRIU images come from a real dump (tests/conftest.py's ``checkpoint``) or
from ``criu_aio_plugin.images.synthetic`` where thousands or defects are needed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backports import zstd

MTIME = 1_700_000_000


@dataclass(frozen=True)
class Container:
    name: str = "aio-holder"
    id: str = "3f1c0ffee0ddba11" * 4
    image: str = "localhost/busybox-aio:latest"
    runtime: str = "crun"
    pod: str = "web-7d9f"
    namespace: str = "shop"


def podman_metadata(c: Container) -> dict[str, bytes]:
    config = {
        "id": c.id,
        "name": c.name,
        "rootfsImageID": "9d3f" * 16,
        "rootfsImageName": c.image,
        "runtime": c.runtime,
        "lockID": 3,
        "createdTime": "2026-11-01T10:00:00Z",
        "checkpointedTime": "2026-11-01T10:05:00Z",
    }
    spec = {"ociVersion": "1.0.2", "annotations": {"io.container.manager": "libpod"}}
    return {
        "config.dump": json.dumps(config).encode(),
        "spec.dump": json.dumps(spec).encode(),
        "network.status": b"[]",
    }


def crio_metadata(c: Container) -> dict[str, bytes]:
    config = {
        "id": c.id,
        "name": c.name,
        "rootfsImage": "9d3f" * 16,
        "rootfsImageRef": "9d3f" * 16,
        "rootfsImageName": c.image,
        "runtime": c.runtime,
        "createdTime": "2026-11-01T10:00:00Z",
        "checkpointedTime": "2026-11-01T10:05:00Z",
    }
    spec = {
        "ociVersion": "1.0.2",
        "annotations": {
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.pod.name": c.pod,
            "io.kubernetes.pod.namespace": c.namespace,
            "io.kubernetes.container.name": c.name,
        },
    }
    return {
        "config.dump": json.dumps(config).encode(),
        "spec.dump": json.dumps(spec).encode(),
        "bind.mounts": b"[]",
    }


def _small_tar(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def stage(images_dir: Path, root: Path, metadata: Mapping[str, bytes]) -> Path:
    """The folder an engine archives: checkpoint/ (a copy of the images) and metadata."""
    root.mkdir(parents=True)
    shutil.copytree(images_dir, root / "checkpoint")
    for name, data in metadata.items():
        (root / name).write_bytes(data)
    (root / "stats-dump").write_bytes(
        (images_dir / "stats-dump").read_bytes() if (images_dir / "stats-dump").exists() else b""
    )
    (root / "rootfs-diff.tar").write_bytes(_small_tar({"etc/motd": b"changed\n"}))
    (root / "devshm-checkpoint.tar").write_bytes(_small_tar({}))
    (root / "artifacts").mkdir()
    for p in [root, *root.rglob("*")]:
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    return root


def tar_folder(
    root: Path, out: Path, *, tool: str = "python", fmt: int = tarfile.PAX_FORMAT
) -> Path:
    """An uncompressed tar of ``root``'s contents (names relative to it)."""
    if tool == "gnu-tar":
        subprocess.run(
            ["tar", "--format=gnu", "-C", str(root), "-cf", str(out), "--sort=name", "."],
            check=True,
        )
        return out
    with tarfile.open(out, "w", format=fmt) as tf:
        for p in sorted(root.iterdir()):
            tf.add(p, arcname=p.name)
    return out


def compress(tar: Path, out: Path, compression: str) -> Path:
    data = tar.read_bytes()
    if compression == "gzip":
        out.write_bytes(gzip.compress(data, mtime=MTIME))
    elif compression == "zstd":
        out.write_bytes(zstd.compress(data))
    else:
        shutil.copyfile(tar, out)
    return out


def kubelet_archive(
    images_dir: Path,
    work: Path,
    c: Container = Container(),
    *,
    tool: str = "python",
) -> Path:
    root = stage(images_dir, work / "kubelet-root", crio_metadata(c))
    out = work / f"checkpoint-{c.pod}_{c.namespace}-{c.name}-2026-11-01T10:05:00Z.tar"
    return tar_folder(root, out, tool=tool)


def podman_archive(
    images_dir: Path,
    work: Path,
    compression: str = "zstd",
    c: Container = Container(),
    *,
    name: str = "ckpt.tar.gz",
    tool: str = "python",
) -> Path:
    root = stage(images_dir, work / f"podman-root-{compression}", podman_metadata(c))
    tar = tar_folder(root, work / f"podman-{compression}.tar", tool=tool)
    out = compress(tar, work / name, compression)
    if out != tar:
        tar.unlink()
    return out


# --- hostile archives ------------------------------------------------------------------


# --- synthetic images folders ------------------------------------------------------------


def _pstree_image(pids: list[int]) -> bytes:
    from criu_aio_plugin import protowire as wire
    from criu_aio_plugin.images import raw

    entries = []
    for i, pid in enumerate(pids):
        payload = (
            wire.varint_field(1, pid)
            + wire.varint_field(2, 0 if i == 0 else pids[0])
            + wire.varint_field(3, pids[0])
            + wire.varint_field(4, pids[0])
            + wire.varint_field(5, pid)
        )
        entries.append(raw.RawEntry(0, payload))
    return raw.dumps_raw(raw.RawImage(0x50273030, tuple(entries)))


def _inventory_image(version: int = 2) -> bytes:
    from criu_aio_plugin import protowire as wire

    payload = wire.varint_field(1, version) + wire.varint_field(2, 1)
    return (0x58313116).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


def synthetic_images(
    d: Path, rings: Mapping[int, list[int]], pages: int = 3 * 4096, seed: int = 0
) -> Path:
    """An images folder: mm-<pid>.img with rings of the given page counts, pstree,
    inventory and a pages file of ``pages`` bytes (random, so it does not compress)."""
    from criu_aio_plugin.images import synthetic

    d.mkdir(parents=True, exist_ok=True)
    for pid, ring_pages in rings.items():
        data = synthetic.mm_image_bytes(synthetic.rings_for(ring_pages), 60, seed + pid)
        (d / f"mm-{pid}.img").write_bytes(data)
    (d / "pstree.img").write_bytes(_pstree_image(sorted(rings)))
    (d / "inventory.img").write_bytes(_inventory_image())
    (d / "pages-1.img").write_bytes(os.urandom(pages))
    return d


# --- hostile archives ------------------------------------------------------------------

GB10 = 10 << 30


def _info(
    name: str, size: int = 0, type_: bytes = tarfile.REGTYPE, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime, info.mode = size, type_, link, MTIME, 0o600
    return info


def _pad(n: int) -> bytes:
    return bytes(-n % 512)


def _members_of(images_dir: Path) -> list[tuple[str, bytes]]:
    return [(f"checkpoint/{p.name}", p.read_bytes()) for p in sorted(images_dir.iterdir())]


def write_tar(
    out: Path,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    end: bool = True,
) -> Path:
    """A tar made block by block (headers from tarfile, data as given, no checks).

    A member whose data is None gets no data at all, whatever its size says
    (a header that lies); a member whose data is b"" and whose size is set
    gets a hole of that size (a sparse file on disk: 10 GB cost nothing).
    """
    with open(out, "wb") as f:
        for info, data in members:
            f.write(info.tobuf(fmt, "utf-8", "surrogateescape"))
            if data is None:
                continue
            if not data and info.size and info.isreg():
                f.seek(info.size + (-info.size % 512), os.SEEK_CUR)
                continue
            f.write(data + _pad(len(data)))
        if end:
            f.write(bytes(1024))
        f.truncate()
    return out


def sound_members(images_dir: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("checkpoint", type_=tarfile.DIRTYPE), b"")
    ]
    for name, data in _members_of(images_dir):
        out.append((_info(name, len(data)), data))
    for name, data in crio_metadata(Container()).items():
        out.append((_info(name, len(data)), data))
    return out


@dataclass(frozen=True)
class Hostile:
    path: Path
    message: str  # a regex the error must match
    member: str | None  # the member the error must name (None: the archive only)


def hostile_archives(images_dir: Path, work: Path) -> dict[str, Hostile]:
    """Archives a checkpoint tool must refuse, each with the error it must give."""
    work.mkdir(parents=True, exist_ok=True)
    sound = sound_members(images_dir)
    out: dict[str, Hostile] = {}

    def plain(
        key: str,
        members: list[tuple[tarfile.TarInfo, bytes | None]],
        message: str,
        member: str | None,
        **kw: object,
    ) -> Path:
        path = write_tar(work / f"{key}.tar", members, **kw)  # type: ignore[arg-type]
        out[key] = Hostile(path, message, member)
        return path

    evil = b"pwned\n"
    plain(
        "traversal",
        [*sound, (_info("checkpoint/../../etc/cron.d/x", len(evil)), evil)],
        r"climbs out",
        "checkpoint/../../etc/cron.d/x",
    )
    plain(
        "absolute",
        [(_info("/etc/cron.d/x", len(evil)), evil), *sound],
        r"absolute",
        "/etc/cron.d/x",
    )
    mm_name = next(n for n, _ in _members_of(images_dir) if "/mm-" in n)
    plain(
        "symlink-image",
        [(i, d) for i, d in sound if i.name != mm_name]
        + [(_info(mm_name, type_=tarfile.SYMTYPE, link="/etc/shadow"), b"")],
        r"symbolic link where a checkpoint image",
        mm_name,
    )
    plain(
        "hardlink-image",
        [(i, d) for i, d in sound if i.name != mm_name]
        + [(_info(mm_name, type_=tarfile.LNKTYPE, link="config.dump"), b"")],
        r"hard link where a checkpoint image",
        mm_name,
    )
    plain(
        "symlink-escapes",
        [*sound, (_info("artifacts/x", type_=tarfile.SYMTYPE, link="../../etc"), b"")],
        r"outside the archive",
        "artifacts/x",
    )
    plain(
        "images-folder-link",
        [(_info("checkpoint", type_=tarfile.SYMTYPE, link="/var/lib"), b""), *sound[1:]],
        r"images folder is a symbolic link",
        "checkpoint",
    )
    plain(
        "fifo",
        [*sound, (_info("artifacts/fifo", type_=tarfile.FIFOTYPE), b"")],
        r"a FIFO",
        "artifacts/fifo",
    )
    plain(
        "device",
        [*sound, (_info("dev-sda", type_=tarfile.BLKTYPE), b"")],
        r"a block device",
        "dev-sda",
    )
    mm_data = next(d for i, d in sound if i.name == mm_name)
    plain(
        "duplicate",
        [*sound, (_info(mm_name, len(mm_data or b"")), mm_data)],
        r"appears twice",
        mm_name,
    )
    # A member whose header says more than the archive holds: the last one, and
    # one in the middle (its "data" swallows the members after it).
    lie = _info("checkpoint/pages-9.img", 1 << 20)
    plain(
        "lying-last",
        [*sound, (lie, b"x" * 1000)],
        r"header says 1048576 bytes",
        "checkpoint/pages-9.img",
        end=False,
    )
    pages = next(i.name for i, _ in sound if "/pages-" in i.name)
    lying_mid = [
        (_info(i.name, i.size + (200 << 20)) if i.name == pages else i, d) for i, d in sound
    ]
    plain("lying-middle", lying_mid, r"header says \d+ bytes", pages)
    # Cut short: the end-of-archive block is missing / a header is cut.
    cut = plain("no-end-block", sound, r"no end-of-archive block", None, end=False)
    data = cut.read_bytes()
    (work / "cut-header.tar").write_bytes(data[: len(data) - 300])
    out["cut-header"] = Hostile(work / "cut-header.tar", r"truncated|header says", None)
    # A bad checksum in the middle (a damaged copy).
    good = write_tar(work / "sound.tar", sound)
    with tarfile.open(good) as tf:
        offsets = [m.offset for m in tf]
    raw = bytearray(good.read_bytes())
    raw[offsets[3] + 10] ^= 0x55
    (work / "bad-checksum.tar").write_bytes(bytes(raw))
    out["bad-checksum"] = Hostile(work / "bad-checksum.tar", r"bad checksum", None)
    # A global pax header renaming every member that follows.
    record = b"21 path=../../escape\n"
    glob = _info("pax_global_header", len(record), tarfile.XGLTYPE)
    ghead = glob.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + record + _pad(len(record))
    (work / "global-path.tar").write_bytes(ghead + good.read_bytes())
    out["global-path"] = Hostile(work / "global-path.tar", r"global pax header sets 'path'", None)
    # Sparse 10 GB page files: GNU's old sparse format and pax sparse 1.0.
    for fmt in ("gnu", "posix"):
        src = work / f"sparse-src-{fmt}"
        (src / "checkpoint").mkdir(parents=True)
        for name, data_ in _members_of(images_dir):
            (src / name).write_bytes(data_)
        with open(src / "checkpoint/pages-7.img", "wb") as f:
            f.truncate(GB10)
            f.write(b"\x01" * 4096)
        dst = work / f"sparse-{fmt}.tar"
        subprocess.run(
            ["tar", f"--format={fmt}", "--sparse", "-C", str(src), "-cf", str(dst), "."], check=True
        )
        shutil.rmtree(src)
        out[f"sparse-10g-{fmt}"] = Hostile(
            dst, r"sparse member claiming 10737418240 bytes", "checkpoint/pages-7.img"
        )
    # Compressed streams cut short or damaged.
    gz = gzip.compress(good.read_bytes(), mtime=MTIME)
    (work / "cut.tar.gz").write_bytes(gz[: len(gz) // 2])
    out["truncated-gzip"] = Hostile(work / "cut.tar.gz", r"truncated gzip stream", None)
    (work / "cut-trailer.tar.gz").write_bytes(gz[:-4])
    out["truncated-gzip-trailer"] = Hostile(
        work / "cut-trailer.tar.gz", r"truncated gzip stream", None
    )
    bad = bytearray(gz)
    bad[len(bad) // 2] ^= 0xFF
    (work / "corrupt.tar.gz").write_bytes(bytes(bad))
    out["corrupt-gzip"] = Hostile(work / "corrupt.tar.gz", r"corrupt gzip stream|header", None)
    zs = zstd.compress(good.read_bytes())
    (work / "cut.tar.zst").write_bytes(zs[: len(zs) // 2])
    out["truncated-zstd"] = Hostile(work / "cut.tar.zst", r"truncated zstd stream", None)
    lying_gz = gzip.compress(write_tar(work / "lying.tmp", lying_mid).read_bytes(), mtime=MTIME)
    (work / "lying.tmp").unlink()
    (work / "lying-middle.tar.gz").write_bytes(lying_gz)
    out["lying-middle-gzip"] = Hostile(
        work / "lying-middle.tar.gz", r"header says \d+ bytes", pages
    )
    (work / "archive.xz").write_bytes(b"\xfd7zXZ\x00" + os.urandom(600))
    out["xz"] = Hostile(work / "archive.xz", r"a xz file", None)
    (work / "random.bin").write_bytes(os.urandom(4096))
    out["garbage"] = Hostile(work / "random.bin", r"neither an images directory nor", None)
    good.unlink()
    return out
