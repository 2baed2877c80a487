"""Read what a checkpoint archive holds about AIO rings, without extracting it.

One forward pass over the archive (``tarformat.TarWalker`` over a ``streams``
source): every member's path and type is validated, and only these are read:

- the CRIU images that matter here: ``mm-<pid>.img`` (the rings),
  ``pstree.img`` (the process tree) and ``inventory.img`` (proof this is a
  CRIU checkpoint, and its image version), from ``checkpoint/`` (podman's
  export, the kubelet's archive) or, for a plain tar of an images
  directory, from the top level;
- ``config.dump`` and ``spec.dump`` at the top level (``metadata``).

Page files, the root-filesystem diff and everything else are skipped: an
uncompressed archive is never read there (the source only moves its offset),
a compressed one is decompressed and dropped in bounded chunks.

Hostile input: a member path that is absolute or climbs out with ``..``, a
link, device or FIFO where images or metadata belong, a link whose target
leaves the archive, a sparse image, a member twice, a member larger than its
cap or more read in all than ``Limits.total``, a header that lies about its
size, a truncated or corrupt stream: each is an ``ImageError`` naming the
archive and the member, before anything is written anywhere.
"""

from __future__ import annotations

import errno as _errno
import os
import posixpath
import stat

from criu_aio_plugin import protowire as wire
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import raw
from criu_aio_plugin.images.archive import tarformat
from criu_aio_plugin.images.archive.detect import sniff
from criu_aio_plugin.images.archive.metadata import (
    CONFIG_DUMP,
    SPEC_DUMP,
    ContainerInfo,
    container_info,
)
from criu_aio_plugin.images.archive.streams import (
    Compression,
    DecompressingSource,
    GzipParams,
    PlainSource,
    StreamError,
    ZstdParams,
    gzip_params,
    zstd_params,
)
from criu_aio_plugin.images.archive.tarformat import Member
from criu_aio_plugin.images.mm import MAX_MM_IMAGE_SIZE, ImageRing, MmImage, mm_pid, parse_mm
from criu_aio_plugin.values import Value

IMAGES_DIR = "checkpoint"
PSTREE = "pstree.img"
INVENTORY = "inventory.img"
# CRIU's `parent` link (--prev-images-dir) is the one link an images folder has.
PARENT_LINK = "parent"
PSTREE_MAGIC = 0x50273030
INVENTORY_MAGIC = 0x58313116
_HEAD = 64 << 10


class Limits(Value):
    """Caps on what is read: per mm image, per other file read, and in all."""

    mm: int = MAX_MM_IMAGE_SIZE
    other: int = 16 << 20
    total: int = 1 << 30


DEFAULT_LIMITS = Limits()


class Process(Value):
    pid: int
    ppid: int


class ArchiveScan(Value):
    """One pass over an archive: every member located, the wanted ones read."""

    def __repr__(self) -> str:
        return f"ArchiveScan({self.path!r}, {self.compression.value}, {len(self.members)} members)"

    path: str
    compression: Compression
    st: os.stat_result
    members: tuple[Member, ...]
    images_prefix: str
    wanted: dict[str, tuple[Member, bytes]]
    end: int  # offset of the end-of-archive block (in the tar stream)
    stream_size: int  # bytes of tar stream (decompressed size for .gz/.zst)
    params: GzipParams | ZstdParams | None = None


class ArchiveCheckpoint(Value):
    """A checkpoint archive as read: its mm images, process tree and container."""

    def __repr__(self) -> str:
        return f"ArchiveCheckpoint({self.scan.path!r}, {len(self.mm_images)} mm images)"

    scan: ArchiveScan
    mm_images: tuple[MmImage, ...]
    mm_members: dict[str, Member]  # mm file name -> member
    processes: tuple[Process, ...]
    img_version: int | None
    container: ContainerInfo | None

    @property
    def path(self) -> str:
        return self.scan.path

    @property
    def compression(self) -> Compression:
        return self.scan.compression

    @property
    def images_prefix(self) -> str:
        return self.scan.images_prefix

    @property
    def rings(self) -> list[ImageRing]:
        return [ring for image in self.mm_images for ring in image.rings]


def member_path(archive: str, member: str) -> str:
    """How a member is named in messages and ring paths: ``ARCHIVE:MEMBER``."""
    return f"{archive}:{member}"


# --- validation -------------------------------------------------------------------


def normalise(name: str, shown: str) -> str:
    """A member path made canonical (``./a//b`` -> ``a/b``); hostile paths refused."""
    if "\x00" in name:
        raise ImageError("member path holds a NUL byte", path=member_path(shown, repr(name)))
    if name.startswith("/"):
        raise ImageError(
            "absolute member path; a checkpoint archive holds relative paths only",
            path=member_path(shown, name),
            hint="the archive is hostile or not a checkpoint archive",
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(
            "member path climbs out of the archive (..)",
            path=member_path(shown, name),
            hint="the archive is hostile or not a checkpoint archive",
        )
    return "/".join(parts)


def _contained_link(member: Member, name: str, shown: str) -> None:
    """A link's target must stay inside the archive."""
    target = member.linkname
    base = "" if member.typeflag == tarformat.HARDLINK else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target)) if target else ""
    if not target or target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise ImageError(
            f"{member.kind} to {target!r}, outside the archive",
            path=member_path(shown, name),
            hint="the archive is hostile or not a checkpoint archive",
        )


def _image_area(name: str) -> str | None:
    """The images folder a member belongs to ("checkpoint/" or "" for top-level *.img)."""
    if name.startswith(IMAGES_DIR + "/"):
        return IMAGES_DIR + "/"
    if "/" not in name and name.endswith(".img"):
        return ""
    return None


def _check_member(member: Member, name: str, shown: str) -> None:
    where = member_path(shown, name)
    if member.typeflag in (tarformat.CHAR_DEVICE, tarformat.BLOCK_DEVICE, tarformat.FIFO):
        raise ImageError(
            f"{member.kind} in a checkpoint archive; refusing it",
            path=where,
            hint="the archive is hostile or not a checkpoint archive",
        )
    if name == IMAGES_DIR and member.typeflag != tarformat.DIRECTORY:
        raise ImageError(
            f"the images folder is {member.kind}, not a directory",
            path=where,
            hint="the archive is hostile or not a checkpoint archive",
        )
    area = _image_area(name)
    is_link = member.typeflag in (tarformat.SYMLINK, tarformat.HARDLINK)
    if area is not None or name in (CONFIG_DUMP, SPEC_DUMP):
        if name == IMAGES_DIR + "/" + PARENT_LINK and member.typeflag == tarformat.SYMLINK:
            _contained_link(member, name, shown)
            return
        if member.sparse:
            raise ImageError(
                f"stored as a sparse member claiming {member.size} bytes in "
                f"{member.stored}; container engines store CRIU images whole",
                path=where,
                hint="the archive is hostile (it can expand to fill the disk of whoever "
                "extracts it) or was repacked with `tar --sparse`",
            )
        if not member.is_regular:
            raise ImageError(
                f"{member.kind} where a checkpoint image or metadata file belongs; refusing it",
                path=where,
                hint="the archive is hostile or not a checkpoint archive",
            )
    elif is_link:
        _contained_link(member, name, shown)


def _wanted_cap(name: str, limits: Limits) -> int | None:
    """The size cap of a member to read, or None when it is not read."""
    area = _image_area(name)
    if area is not None:
        base = name[len(area) :]
        if "/" in base:
            return None
        if mm_pid(base) is not None:
            return limits.mm
        if base in (PSTREE, INVENTORY):
            return limits.other
        return None
    if name in (CONFIG_DUMP, SPEC_DUMP):
        return limits.other
    return None


# --- the pass ------------------------------------------------------------------------


def _open(path: str | os.PathLike[str]) -> tuple[int, os.stat_result, str]:
    shown = os.fspath(path)
    try:
        fd = os.open(shown, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise ImageError(f"cannot open: {err.strerror}", path=shown, errno=err.errno) from err
    try:
        st = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        raise ImageError(f"cannot stat: {err.strerror}", path=shown, errno=err.errno) from err
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ImageError("not a regular file or a directory", path=shown, errno=_errno.EINVAL)
    return fd, st, shown


def head_of(fd: int, shown: str) -> bytes:
    try:
        return os.pread(fd, _HEAD, 0)
    except OSError as err:
        raise ImageError(f"cannot read: {err.strerror}", path=shown, errno=err.errno) from err


def source_for(
    fd: int, size: int, kind: Compression, shown: str, trace: list[tuple[int, int]] | None = None
) -> PlainSource | DecompressingSource:
    if kind is Compression.NONE:
        return PlainSource(fd, size, shown, trace)
    return DecompressingSource(fd, kind, shown)


def scan_fd(
    fd: int,
    st: os.stat_result,
    shown: str,
    limits: Limits = DEFAULT_LIMITS,
    trace: list[tuple[int, int]] | None = None,
) -> ArchiveScan:
    """One validating pass over the archive open at ``fd``."""
    head = head_of(fd, shown)
    kind = sniff(head, shown)
    params: GzipParams | ZstdParams | None = None
    if kind is Compression.GZIP:
        params = gzip_params(head, shown)
    elif kind is Compression.ZSTD:
        params = zstd_params(head)
    source = source_for(fd, st.st_size, kind, shown, trace)
    walker = tarformat.TarWalker(source, shown)
    members: list[Member] = []
    try:
        wanted = _walk(walker, members, shown, limits)
        if isinstance(source, DecompressingSource):
            # Read the stream to its end: a cut or corrupt tail (CRC, size) is
            # an error here too, not only when a runtime imports the archive.
            while source.skip(1 << 30):
                pass
    except StreamError as err:
        # Name the member the damage was found in (or the one it follows).
        where, after = walker.where_now()
        raise ImageError(
            err.message.removeprefix(shown + ": ") + after,
            path=where,
            errno=err.errno,
            hint=err.hint,
        ) from err
    return ArchiveScan(
        path=shown,
        compression=kind,
        st=st,
        members=tuple(members),
        images_prefix=_images_prefix(wanted, shown),
        wanted=wanted,
        end=walker.end,
        stream_size=source.pos if isinstance(source, DecompressingSource) else st.st_size,
        params=params,
    )


def _walk(
    walker: tarformat.TarWalker, members: list[Member], shown: str, limits: Limits
) -> dict[str, tuple[Member, bytes]]:
    """Validate every member (appended to ``members``); read the wanted ones."""
    wanted: dict[str, tuple[Member, bytes]] = {}
    total = 0
    for member in walker.members():
        name = normalise(member.name, shown)
        members.append(member)
        if not name:  # the archive's own root ("./")
            continue
        _check_member(member, name, shown)
        cap = _wanted_cap(name, limits)
        if cap is None or not member.is_regular:
            continue
        where = member_path(shown, name)
        if name in wanted:
            raise ImageError(
                "appears twice in the archive; which copy a runtime restores is "
                "up to its extractor, so criu-aio refuses to guess",
                path=where,
                hint="the archive is hostile or was appended to",
            )
        if member.stored > cap:
            raise ImageError(
                f"{member.stored} bytes, more than the {cap}-byte cap for this file",
                path=where,
                errno=_errno.EFBIG,
                hint="the archive is hostile or not a CRIU checkpoint",
            )
        total += member.stored
        if total > limits.total:
            raise ImageError(
                f"more than {limits.total} bytes of images and metadata to read",
                path=where,
                errno=_errno.EFBIG,
                hint="the archive is hostile or not a CRIU checkpoint",
            )
        wanted[name] = (member, walker.read_data(member))
    return wanted


def _images_prefix(wanted: dict[str, tuple[Member, bytes]], shown: str) -> str:
    def has_images(prefix: str) -> bool:
        return any(
            name.startswith(prefix)
            and "/" not in name[len(prefix) :]
            and (mm_pid(name[len(prefix) :]) is not None or name.endswith("/" + INVENTORY))
            for name in wanted
        ) or (prefix == "" and INVENTORY in wanted)

    nested, top = has_images(IMAGES_DIR + "/"), has_images("")
    if nested and top:
        raise ImageError(
            f"CRIU images both at the top level and in {IMAGES_DIR}/; which ones a "
            "runtime restores is unclear, so criu-aio refuses to guess",
            path=shown,
        )
    if nested:
        return IMAGES_DIR + "/"
    if top:
        return ""
    raise ImageError(
        f"no CRIU images (mm-<pid>.img, inventory.img) in {IMAGES_DIR}/ or at the top level",
        path=shown,
        hint="give a podman export, a kubelet checkpoint archive or a tar of an images "
        "directory (pod archives with several containers are not supported)",
    )


def scan_archive(
    path: str | os.PathLike[str],
    limits: Limits = DEFAULT_LIMITS,
    trace: list[tuple[int, int]] | None = None,
) -> ArchiveScan:
    fd, st, shown = _open(path)
    try:
        return scan_fd(fd, st, shown, limits, trace)
    finally:
        os.close(fd)


# --- what the read images say -----------------------------------------------------------


def mm_images_of(scan: ArchiveScan) -> tuple[tuple[MmImage, ...], dict[str, Member]]:
    images: list[MmImage] = []
    members: dict[str, Member] = {}
    for name, (member, data) in scan.wanted.items():
        if not name.startswith(scan.images_prefix):
            continue
        base = name[len(scan.images_prefix) :]
        pid = mm_pid(base)
        if pid is None or "/" in base:
            continue
        path = member_path(scan.path, name)
        # st is the archive's: the image has no inode of its own.
        images.append(MmImage(base, path, pid, data, scan.st, parse_mm(data, path, pid)))
        members[base] = member
    images.sort(key=lambda image: image.pid)
    return tuple(images), members


def _pstree(data: bytes, path: str) -> tuple[Process, ...]:
    image = raw.loads_raw(data, path)
    if image.magic != PSTREE_MAGIC:
        raise ImageError(
            f"image magic {image.magic:#010x} is not the pstree magic {PSTREE_MAGIC:#010x}",
            path=path,
            offset=4,
        )
    out = []
    for entry in image.entries:
        try:
            fields = wire.walk(entry.payload)
        except wire.WireError as err:
            raise ImageError(
                f"malformed pstree_entry: {err.reason}",
                path=path,
                offset=entry.payload_offset + err.offset,
            ) from err
        values = {f.number: f.value for f in fields if f.wire_type == wire.VARINT}
        if 1 not in values:
            raise ImageError("pstree_entry without pid", path=path, offset=entry.offset)
        out.append(Process(values[1], values.get(2, 0)))
    return tuple(out)


def _img_version(data: bytes, path: str) -> int:
    """inventory.img: one magic (no common magic), then one inventory_entry."""
    if len(data) < 8 or int.from_bytes(data[:4], "little") != INVENTORY_MAGIC:
        raise ImageError("not a CRIU inventory image (bad magic)", path=path, offset=0)
    length = int.from_bytes(data[4:8], "little")
    payload = data[8 : 8 + length]
    if len(payload) != length:
        raise ImageError("truncated inventory_entry", path=path, offset=4)
    try:
        fields = wire.walk(payload)
    except wire.WireError as err:
        raise ImageError(
            f"malformed inventory_entry: {err.reason}", path=path, offset=8 + err.offset
        ) from err
    versions = [f.value for f in fields if f.number == 1 and f.wire_type == wire.VARINT]
    if not versions:
        raise ImageError("inventory_entry without img_version", path=path, offset=8)
    return versions[-1]


def checkpoint_of(scan: ArchiveScan) -> ArchiveCheckpoint:
    mm_images, mm_members = mm_images_of(scan)
    if not mm_images:
        raise ImageError(
            f"no mm-<pid>.img in {scan.images_prefix or 'the top level'}",
            path=scan.path,
            hint="give the archive `podman container checkpoint --export` or the kubelet wrote",
        )
    prefix = scan.images_prefix
    processes: tuple[Process, ...] = ()
    if prefix + PSTREE in scan.wanted:
        pstree = prefix + PSTREE
        processes = _pstree(scan.wanted[pstree][1], member_path(scan.path, pstree))
    img_version = None
    if prefix + INVENTORY in scan.wanted:
        img_version = _img_version(
            scan.wanted[prefix + INVENTORY][1], member_path(scan.path, prefix + INVENTORY)
        )
    config = scan.wanted.get(CONFIG_DUMP)
    spec = scan.wanted.get(SPEC_DUMP)
    container = container_info(config[1] if config else None, spec[1] if spec else None)
    return ArchiveCheckpoint(scan, mm_images, mm_members, processes, img_version, container)


def read_archive(
    path: str | os.PathLike[str],
    limits: Limits = DEFAULT_LIMITS,
    trace: list[tuple[int, int]] | None = None,
) -> ArchiveCheckpoint:
    """Read a checkpoint archive (tar, tar.gz, tar.zst): rings, processes, container."""
    return checkpoint_of(scan_archive(path, limits, trace))
