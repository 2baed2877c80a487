"""Read the AIO rings of a checkpoint from its mm-<pid>.img files.

CRIU writes one mm image per address space (criu/mem.c, dump_task_mm) holding
one ``mm_entry``; its repeated field 16 ``aios`` lists the task's AIO rings
(criu/aio.c, dump_aio_ring): ring address ``id``, ``nr_req`` for io_setup at
restore, mapping length ``ring_len``.

Files are opened relative to a directory fd with O_NOFOLLOW and O_NONBLOCK and
must be regular files: a symlink could point the rewrite at a file outside the
checkpoint, a FIFO would block, a device could be anything.

The mm_entry is decoded by ``mm_wire``, without protobuf (this module sits on
``criu-aio swrk``'s restore path); ``parse_mm_protobuf`` decodes it with the
protobuf runtime (``codec``) instead, the reference the tests hold it to, and
what a process reading many images switches to (``parse_mm``).
"""

from __future__ import annotations

import errno as _errno
import os
import stat

from criu_aio_plugin import protowire
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import raw
from criu_aio_plugin.images.mm_wire import decode_mm_entry
from criu_aio_plugin.values import Value


def mm_pid(name: str) -> int | None:
    """The pid of an ``mm-<pid>.img`` file name (digits only), else None."""
    if name.startswith("mm-") and name.endswith(".img"):
        digits = name[3:-4]
        if digits.isdigit() and digits.isascii():
            return int(digits)
    return None


# Ring lengths are whole pages; 4 KiB is the smallest page of every
# architecture CRIU supports, so any real ring_len is a multiple of it.
RING_ALIGN = 4096
# fs/aio.c ioctx_alloc() refuses nr_events (after doubling) above
# 0x10000000 / sizeof(struct io_event), so no ring exceeds 256 MiB plus the
# header page (64 KiB covers the largest page size).
MAX_RING_LEN = 0x10000000 + 0x10000
# An mm image is one mm_entry (see codec.MAX_ENTRY_SIZE) plus an 8-byte header.
MAX_MM_IMAGE_SIZE = raw.MAX_ENTRY_SIZE + 12

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ImageRing(Value):
    """One AIO ring as stored in a checkpoint (frozen; see ``values``).

    ``path`` is the mm image's path as given (directory joined with the file
    name, or ``ARCHIVE:MEMBER`` for an archive); ``file`` is the bare file
    name, the key ``apply_fix`` and ``fix_archive`` use.
    """

    path: str
    pid: int
    ring_id: int
    nr_req: int
    ring_len: int

    @property
    def file(self) -> str:
        # A ring read from an archive has the path ``ARCHIVE:MEMBER``; an mm
        # file name never holds a colon, so the last one ends the archive part.
        return os.path.basename(self.path).rpartition(":")[2]

    @property
    def pages(self) -> int:
        return -(-self.ring_len // RING_ALIGN)


class MmImage(Value):
    """An mm image as read: its exact bytes, identity, and validated rings."""

    name: str
    path: str
    pid: int
    data: bytes
    st: os.stat_result
    rings: tuple[ImageRing, ...]


class _OpenImagesDir:
    """``open_images_dir``'s context manager (a class: contextlib is not lean)."""

    __slots__ = ("_fd", "_images_dir")

    def __init__(self, images_dir: str | os.PathLike[str] | int) -> None:
        self._images_dir = images_dir
        self._fd = -1

    def __enter__(self) -> tuple[int, str]:
        images_dir = self._images_dir
        if isinstance(images_dir, int):
            try:
                shown = os.readlink(f"/proc/self/fd/{images_dir}")
            except OSError:
                shown = f"<fd {images_dir}>"
            # A fresh descriptor of the same directory: the caller's may be O_PATH
            # (listing needs a readable one) and its offset is left alone.
            target, dir_fd = ".", images_dir
        else:
            shown = os.fspath(images_dir)
            target, dir_fd = shown, None
        try:
            self._fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as err:
            raise ImageError(
                f"cannot open the images directory: {err.strerror}", path=shown, errno=err.errno
            ) from err
        return self._fd, shown

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def open_images_dir(images_dir: str | os.PathLike[str] | int) -> _OpenImagesDir:
    """``with open_images_dir(path or dir fd) as (dir_fd, display_path)``; fd closed after."""
    return _OpenImagesDir(images_dir)


class _LockedImagesDir(_OpenImagesDir):
    """``locked_images_dir``'s context manager: open, then hold the exclusive flock."""

    __slots__ = ()

    def __enter__(self) -> tuple[int, str]:
        dir_fd, shown = super().__enter__()
        try:
            import fcntl  # only a writer locks (images.rewrite imports it up front)

            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        except OSError as err:
            os.close(dir_fd)
            raise ImageError(
                f"cannot lock the directory: {err.strerror}", path=shown, errno=err.errno
            ) from err
        return dir_fd, shown


def locked_images_dir(images_dir: str | os.PathLike[str] | int) -> _LockedImagesDir:
    """``open_images_dir`` holding the directory's exclusive flock (released on close).

    The rewrite's lock: runs on one checkpoint take turns. ``open_images_dir``
    always opens a descriptor of our own, so the lock is on our open file
    description and a borrowed fd's own locks are left alone.
    """
    return _LockedImagesDir(images_dir)


def list_mm_images(dir_fd: int, shown: str) -> list[tuple[int, str]]:
    """``(pid, file name)`` of every mm-<pid>.img in the directory, by pid."""
    try:
        names = os.listdir(dir_fd)
    except OSError as err:
        raise ImageError(
            f"cannot list the images directory: {err.strerror}", path=shown, errno=err.errno
        ) from err
    found = []
    for name in names:
        pid = mm_pid(name)
        if pid is not None:
            found.append((pid, name))
    found.sort()
    return found


def read_regular_file(
    dir_fd: int, name: str, path: str, limit: int
) -> tuple[bytes, os.stat_result]:
    """The whole content of ``name`` (a regular file, not a symlink), and its stat."""
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == _errno.ELOOP:
            raise ImageError(
                "is a symbolic link; criu-aio refuses to follow it",
                path=path,
                errno=err.errno,
                hint="replace the link with the image file itself",
            ) from err
        raise ImageError(f"cannot open: {err.strerror}", path=path, errno=err.errno) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(
                f"not a regular file ({file_kind(st.st_mode)}); refusing to read it",
                path=path,
                errno=_errno.EINVAL,
            )
        if st.st_size > limit:
            raise ImageError(
                f"{st.st_size} bytes, more than the {limit}-byte maximum for this image",
                path=path,
                offset=0,
                errno=_errno.EFBIG,
            )
        chunks = []
        got = 0
        while True:
            chunk = os.read(fd, max(st.st_size - got, 0) + 1)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if got > limit:
                raise ImageError(
                    f"grew past the {limit}-byte maximum while being read", path=path, offset=limit
                )
        return b"".join(chunks), st
    except OSError as err:
        raise ImageError(f"cannot read: {err.strerror}", path=path, errno=err.errno) from err
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    """What a stat mode names, in words ("a FIFO")."""
    for test, kind in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return kind
    return f"mode {mode:o}"


# Decoding by hand costs ~0.1 ms per KiB of mm_entry, importing protobuf ~15 ms
# once: a process (``criu-aio swrk``) reading a few small images does best
# without protobuf, one reading a thousand (``fix``, ``inspect``) with it. Both
# decoders accept the same bytes and find the same rings (tests/unit/test_mm_wire.py),
# so a process switches for good once it has decoded this much by hand.
HAND_DECODE_BUDGET = 256 << 10
_hand_decoded = 0


def parse_mm(data: bytes, path: str, pid: int) -> tuple[ImageRing, ...]:
    """Validate an mm image's bytes and return its rings, in file order.

    Decoded by hand (``parse_mm_wire``) until the process has decoded
    ``HAND_DECODE_BUDGET`` bytes that way, with protobuf after.
    """
    global _hand_decoded
    if _hand_decoded >= HAND_DECODE_BUDGET:
        return parse_mm_protobuf(data, path, pid)
    _hand_decoded += len(data)
    return parse_mm_wire(data, path, pid)


def parse_mm_wire(data: bytes, path: str, pid: int) -> tuple[ImageRing, ...]:
    """``parse_mm`` with the hand-written decoder (``mm_wire``), no protobuf."""
    entry = _mm_entry(data, path)
    try:
        aios, missing = decode_mm_entry(entry.payload)
    except protowire.WireError as err:
        raise ImageError(
            f"malformed mm_entry protobuf: {err.reason} at payload byte {err.offset}",
            path=path,
            offset=entry.payload_offset,
        ) from err
    if missing:
        raise ImageError(
            "mm_entry lacks required field(s)",
            path=path,
            offset=entry.payload_offset,
            field=", ".join(missing),
        )
    return _rings(aios, path, pid, entry)


def parse_mm_protobuf(data: bytes, path: str, pid: int) -> tuple[ImageRing, ...]:
    """``parse_mm`` through the protobuf runtime (``codec``): the reference reader."""
    from criu_aio_plugin.images import codec

    entry = _mm_entry(data, path)
    msg = codec.decode_entry(codec.HANDLERS[raw.MM_MAGIC], entry, path)
    aios = [(a.id, a.nr_req, a.ring_len) for a in getattr(msg, "aios")]  # noqa: B009
    return _rings(aios, path, pid, entry)


def _mm_entry(data: bytes, path: str) -> raw.RawEntry:
    image = raw.loads_raw(data, path)
    if image.magic != raw.MM_MAGIC:
        raise ImageError(
            f"image magic {image.magic:#010x} is not the mm magic {raw.MM_MAGIC:#010x}",
            path=path,
            offset=4,
        )
    if len(image.entries) != 1:
        raise ImageError(
            f"an mm image holds exactly one mm_entry, this one holds {len(image.entries)}",
            path=path,
            offset=8,
        )
    return image.entries[0]


def _rings(
    aios: list[tuple[int, int, int]], path: str, pid: int, entry: raw.RawEntry
) -> tuple[ImageRing, ...]:
    rings = []
    seen: dict[int, int] = {}
    for i, (ring_id, nr_req, ring_len) in enumerate(aios):
        _validate_ring(ring_id, nr_req, ring_len, i, seen, path, entry)
        rings.append(ImageRing(path, pid, ring_id, nr_req, ring_len))
    return tuple(rings)


def _validate_ring(
    ring_id: int,
    nr_req: int,
    ring_len: int,
    index: int,
    seen: dict[int, int],
    path: str,
    entry: raw.RawEntry,
) -> None:
    problem = None
    name = "id"
    if ring_len == 0:
        problem, name = "ring_len is 0", "ring_len"
    elif ring_len % RING_ALIGN:
        problem, name = f"ring_len {ring_len} is not a multiple of {RING_ALIGN}", "ring_len"
    elif ring_len > MAX_RING_LEN:
        problem = f"ring_len {ring_len} exceeds the largest ring a kernel makes"
        name = "ring_len"
    elif nr_req == 0:
        problem, name = "nr_req is 0 (io_setup refuses 0 events)", "nr_req"
    elif ring_id == 0 or ring_id % RING_ALIGN:
        problem = f"ring address {ring_id:#x} is not a page address"
    elif ring_id in seen:
        problem = f"ring address {ring_id:#x} repeats aios[{seen[ring_id]}]"
    if problem is not None:
        raise ImageError(
            problem,
            path=path,
            offset=_aio_offset(entry, index),
            field=f"mm_entry.aios[{index}].{name}",
        )
    seen[ring_id] = index


def _aio_offset(entry: raw.RawEntry, index: int) -> int | None:
    """File offset of the ``index``-th aios submessage (for error messages)."""
    try:
        fields = protowire.walk(entry.payload)
    except protowire.WireError:
        return None
    aios = [f for f in fields if f.number == 16 and f.wire_type == protowire.LENGTH_DELIMITED]
    if index >= len(aios):
        return None
    return entry.payload_offset + aios[index].start


def read_mm(dir_fd: int, name: str, shown_dir: str) -> MmImage:
    """Read and validate one mm image of the directory."""
    pid = mm_pid(name)
    if pid is None:
        raise ImageError("not an mm-<pid>.img file name", path=os.path.join(shown_dir, name))
    path = os.path.join(shown_dir, name)
    data, st = read_regular_file(dir_fd, name, path, MAX_MM_IMAGE_SIZE)
    return MmImage(name, path, pid, data, st, parse_mm(data, path, pid))


def read_mm_images(images_dir: str | os.PathLike[str] | int) -> list[MmImage]:
    """Every mm image of a checkpoint directory, validated, by pid."""
    with open_images_dir(images_dir) as (dir_fd, shown):
        return [read_mm(dir_fd, name, shown) for _, name in list_mm_images(dir_fd, shown)]


def rings_of(images: list[MmImage]) -> list[ImageRing]:
    return [ring for image in images for ring in image.rings]


def read_rings(images_dir: str | os.PathLike[str] | int) -> list[ImageRing]:
    """Every AIO ring of a checkpoint, by pid then file order.

    ``images_dir`` is a path or an open directory fd (borrowed, not closed).
    Raises ``ImageError`` naming the file and offset or field on bad input.
    """
    return rings_of(read_mm_images(images_dir))
