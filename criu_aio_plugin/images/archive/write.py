"""Write a fixed archive: the original, byte for byte, with a few members replaced.

The writer knows nothing of CRIU: it copies the archive's tar stream from the
first byte to the last, and where a ``Replacement`` says so it emits the
member's new header chain (``tarformat.resize_header``: size fields and
checksums only), new data and padding instead of the old ones. Member order,
names, modes, owners, times, pax records, the end-of-archive blocks and
whatever trails them are copied, not re-encoded. On the way it re-reads each
replaced member's header and data and checks them against the scan, so an
archive that changed between the scan and the copy is refused, not mixed.

An uncompressed archive is copied by the kernel (copy_file_range(2), a
reflink where the filesystem can), extent by extent: holes (SEEK_HOLE) stay
holes, so a sparse 10 GB page file costs neither time nor disk. A gzip or
zstd archive is decompressed and recompressed in one pass into the same
format (``streams.GzipSink``/``ZstdSink``).
"""

from __future__ import annotations

import errno as _errno
import hashlib
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images.archive import tarformat
from criu_aio_plugin.images.archive.read import ArchiveScan, member_path
from criu_aio_plugin.images.archive.streams import (
    Compression,
    DecompressingSource,
    FdWriter,
    GzipParams,
    GzipSink,
    Sink,
    ZstdParams,
    ZstdSink,
)
from criu_aio_plugin.images.archive.tarformat import Member

_COPY_CHUNK = 1 << 20
_NO_COPY_FILE_RANGE = {_errno.EXDEV, _errno.ENOSYS, _errno.EINVAL, _errno.EOPNOTSUPP}


@dataclass(frozen=True)
class Replacement:
    """Put ``new_data`` where ``member``'s data was (its old data hashes to ``old_sha256``)."""

    member: Member
    old_sha256: str
    new_data: bytes = field(repr=False)

    def chunk(self, shown: str) -> bytes:
        """The new header chain, data and padding that take the member's place."""
        header = tarformat.resize_header(self.member, len(self.new_data), shown)
        pad = tarformat.padded(len(self.new_data)) - len(self.new_data)
        return header + self.new_data + bytes(pad)


def _changed(scan: ArchiveScan, what: str) -> ImageError:
    return ImageError(
        f"changed while criu-aio was rewriting it ({what}); nothing was modified",
        path=scan.path,
        errno=_errno.EBUSY,
        hint="run again once nothing else writes the archive",
    )


def _check_old(scan: ArchiveScan, rep: Replacement, header: bytes, data: bytes) -> None:
    if header != rep.member.header:
        raise _changed(scan, f"the header of {rep.member.name}")
    if hashlib.sha256(data).hexdigest() != rep.old_sha256:
        raise _changed(scan, f"the data of {rep.member.name}")


def _ordered(reps: Sequence[Replacement]) -> list[Replacement]:
    out = sorted(reps, key=lambda r: r.member.offset)
    for a, b in itertools.pairwise(out):
        if b.member.offset < a.member.end:  # pragma: no cover - members never overlap
            raise AssertionError("overlapping replacements")
    return out


def final_size(scan: ArchiveScan, reps: Sequence[Replacement]) -> int:
    """The length of the new tar stream."""
    return scan.stream_size + sum(
        len(r.chunk(scan.path)) - (r.member.end - r.member.offset) for r in reps
    )


# --- uncompressed: kernel copies, holes kept -----------------------------------------


def _pread_exact(fd: int, n: int, offset: int, scan: ArchiveScan) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = os.pread(fd, min(n - got, _COPY_CHUNK), offset + got)
        if not part:
            raise _changed(scan, "it is shorter than when it was read")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _copy_data(src: int, s_off: int, dst: int, d_off: int, n: int, scan: ArchiveScan) -> None:
    use_kernel = True
    while n > 0:
        if use_kernel:
            try:
                done = os.copy_file_range(src, dst, n, s_off, d_off)
            except OSError as err:
                if err.errno not in _NO_COPY_FILE_RANGE:
                    raise
                use_kernel = False
                continue
            if done == 0:
                raise _changed(scan, "it is shorter than when it was read")
        else:
            data = _pread_exact(src, min(n, _COPY_CHUNK), s_off, scan)
            _pwrite_all(dst, data, d_off)
            done = len(data)
        s_off, d_off, n = s_off + done, d_off + done, n - done


def _copy_range(src: int, s_off: int, dst: int, d_off: int, n: int, scan: ArchiveScan) -> None:
    """Copy ``n`` bytes, skipping the source's holes (the destination is pre-sized)."""
    end = s_off + n
    pos = s_off
    while pos < end:
        try:
            data = os.lseek(src, pos, os.SEEK_DATA)
            hole = os.lseek(src, data, os.SEEK_HOLE)
        except OSError as err:
            if err.errno == _errno.ENXIO:  # only a hole from pos to the end of the file
                return
            data, hole = pos, end  # no SEEK_DATA here: copy everything
        if data >= end:
            return
        stop = min(hole, end)
        _copy_data(src, data, dst, d_off + (data - s_off), stop - data, scan)
        pos = stop


def _write_plain(src: int, scan: ArchiveScan, reps: list[Replacement], dst: int) -> int:
    size = final_size(scan, reps)
    os.ftruncate(dst, size)  # unwritten ranges read as zeros: the holes
    s_pos = d_pos = 0
    for rep in reps:
        m = rep.member
        _copy_range(src, s_pos, dst, d_pos, m.offset - s_pos, scan)
        d_pos += m.offset - s_pos
        header = _pread_exact(src, len(m.header), m.offset, scan)
        _check_old(scan, rep, header, _pread_exact(src, m.stored, m.data_offset, scan))
        chunk = rep.chunk(scan.path)
        _pwrite_all(dst, chunk, d_pos)
        s_pos, d_pos = m.end, d_pos + len(chunk)
    if os.fstat(src).st_size != scan.stream_size:
        raise _changed(scan, "its size")
    _copy_range(src, s_pos, dst, d_pos, scan.stream_size - s_pos, scan)
    return size


# --- compressed: one decompress-recompress pass --------------------------------------------


def _sink(scan: ArchiveScan, out: FdWriter) -> Sink:
    if isinstance(scan.params, GzipParams):
        return GzipSink(out, scan.params)
    if isinstance(scan.params, ZstdParams):
        return ZstdSink(out, scan.params)
    raise AssertionError(f"no sink for {scan.compression}")  # pragma: no cover


def _pump(source: DecompressingSource, sink: Sink, n: int, scan: ArchiveScan) -> None:
    while n:
        data = source.read(min(n, _COPY_CHUNK))
        if not data:
            raise _changed(scan, "its stream is shorter than when it was read")
        sink.write(data)
        n -= len(data)


def _write_compressed(src: int, scan: ArchiveScan, reps: list[Replacement], dst: int) -> int:
    source = DecompressingSource(src, scan.compression, scan.path)
    out = FdWriter(dst)
    sink = _sink(scan, out)
    for rep in reps:
        m = rep.member
        _pump(source, sink, m.offset - source.pos, scan)
        header = source.read(len(m.header))
        data = source.read(m.stored)
        _check_old(scan, rep, header, data)
        source.skip(m.end - source.pos)
        sink.write(rep.chunk(scan.path))
    while True:
        data = source.chunks()
        if not data:
            break
        sink.write(data)
    if source.pos != scan.stream_size:
        raise _changed(scan, "its stream has another length than when it was read")
    sink.close()
    return out.written


def write_fixed(src: int, scan: ArchiveScan, reps: Sequence[Replacement], dst: int) -> int:
    """Write the archive read from ``src`` (as ``scan`` found it), with ``reps``, to ``dst``.

    Returns the bytes written to ``dst`` (not fsynced: the caller does).
    ``ImageError`` when the source no longer matches the scan.
    """
    ordered = _ordered(reps)
    for rep in ordered:
        if not rep.member.is_regular:
            raise ImageError(
                f"cannot replace {rep.member.kind}", path=member_path(scan.path, rep.member.name)
            )
    if scan.compression is Compression.NONE:
        return _write_plain(src, scan, ordered, dst)
    return _write_compressed(src, scan, ordered, dst)


def copy_whole(src: int, scan: ArchiveScan, dst: int) -> int:
    """The archive file as it is, byte for byte (holes kept): ``--output`` with nothing to fix."""
    size = scan.st.st_size
    os.ftruncate(dst, size)
    _copy_range(src, 0, dst, 0, size, scan)
    if os.fstat(src).st_size != size:
        raise _changed(scan, "its size")
    return size
