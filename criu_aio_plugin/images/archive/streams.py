"""Byte streams of a checkpoint archive: what the file holds, read forward, written back.

A checkpoint archive is a tar (podman's ``--compress=none``, the kubelet's
``checkpoint-*.tar``), a gzip stream of one (``--compress=gzip``) or a zstd
stream of one (podman's default, whatever the file is called); ``detect``
tells which from the first bytes.

Sources (what the tar walker reads) move forward only: ``read(n)`` and
``skip(n)``. ``PlainSource`` reads an uncompressed archive with pread(2) and
skips by moving its offset: a page file it skips is never read (``trace``
records every read, so a test can prove it). ``DecompressingSource`` runs the
decompressor over the whole file in one pass, in bounded chunks (a small
stream that expands to gigabytes costs time, not memory), and reports a
truncated or corrupt stream as an ``ImageError``.

Sinks write the fixed archive: ``GzipSink`` and ``ZstdSink`` write the same
format (gzip: the original member header byte for byte, then deflate; zstd:
one frame, with a content checksum when the original had one).

zstd: Python 3.14's ``compression.zstd``, or its backport ``backports.zstd``
(a dependency on older Pythons; the same API and the same libzstd, kept by
the authors of the 3.14 module), not the system's ``zstd`` binary: no pipe,
no child process, and errors come back as exceptions with the offset known.
"""

from __future__ import annotations

import enum
import errno as _errno
import os
import struct
import sys
import zlib
from typing import Any, Protocol

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.values import Value


def _zstd() -> Any:
    """The zstd module, imported when a zstd archive is met (not for tar or gzip)."""
    if sys.version_info >= (3, 14):  # pragma: no cover - this project runs 3.11 today
        from compression import zstd
    else:
        from backports import zstd
    return zstd


BLOCK = 512
# Compressed input is fed 64 KiB at a time and output taken 1 MiB at a time:
# memory stays bounded however much a chunk expands, and zlib's
# unconsumed_tail (copied on each call) stays small.
_IN_CHUNK = 64 << 10
_OUT_CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Skippable zstd frames: magic 0x184D2A50 to 0x184D2A5F (little-endian).
_ZSTD_SKIPPABLE_HIGH = b"\x2a\x4d\x18"


class StreamError(ImageError):
    """A compressed stream is cut short or corrupt (the reader names the member)."""


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def is_zstd(head: bytes) -> bool:
    return head.startswith(ZSTD_MAGIC) or (
        len(head) >= 4 and head[1:4] == _ZSTD_SKIPPABLE_HIGH and head[0] & 0xF0 == 0x50
    )


# --- sources -------------------------------------------------------------------


class Source(Protocol):
    """A forward-only byte stream (``pos`` is the offset of the next byte)."""

    pos: int

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        ...

    def skip(self, n: int) -> int:
        """Move ``n`` bytes forward; returns how many were there (fewer at the end)."""
        ...


class PlainSource:
    """An uncompressed archive read with pread(2); skipping reads nothing."""

    def __init__(self, fd: int, size: int, shown: str, trace: list[tuple[int, int]] | None = None):
        self._fd = fd
        self.size = size
        self.pos = 0
        self._shown = shown
        self.trace = trace

    def read(self, n: int) -> bytes:
        n = max(0, min(n, self.size - self.pos))
        parts: list[bytes] = []
        want = n
        while want:
            try:
                part = os.pread(self._fd, min(want, _OUT_CHUNK), self.pos + n - want)
            except OSError as err:
                raise ImageError(
                    f"cannot read: {err.strerror}", path=self._shown, errno=err.errno
                ) from err
            if not part:  # shrank under us
                break
            parts.append(part)
            want -= len(part)
        data = b"".join(parts)
        if self.trace is not None and data:
            self.trace.append((self.pos, len(data)))
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        moved = max(0, min(n, self.size - self.pos))
        self.pos += moved
        return moved


class _Frames:
    """One decoder over a sequence of gzip members or zstd frames."""

    def __init__(self, kind: Compression) -> None:
        self.kind = kind
        self._new()

    def _new(self) -> None:
        if self.kind is Compression.GZIP:
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            self._zstd = _zstd().ZstdDecompressor()

    @property
    def eof(self) -> bool:
        return self._zlib.eof if self.kind is Compression.GZIP else self._zstd.eof

    def unused(self) -> bytes:
        return self._zlib.unused_data if self.kind is Compression.GZIP else self._zstd.unused_data

    def next_frame(self) -> None:
        self._new()


class DecompressingSource:
    """A gzip or zstd archive, decompressed forward in one pass."""

    def __init__(self, fd: int, kind: Compression, shown: str) -> None:
        self._fd = fd
        self.kind = kind
        self._shown = shown
        self._frames = _Frames(kind)
        self._in = b""  # compressed bytes not yet given to the decoder
        self._in_pos = 0  # file offset of the next compressed byte to read
        self._out = b""  # decompressed bytes not yet handed out
        self._out_at = 0
        self._zstd_more = False  # zstd holds output it has not returned yet
        self._done = False
        self.pos = 0

    def _raw(self) -> bytes:
        try:
            data = os.pread(self._fd, _IN_CHUNK, self._in_pos)
        except OSError as err:
            raise ImageError(
                f"cannot read: {err.strerror}", path=self._shown, errno=err.errno
            ) from err
        self._in_pos += len(data)
        return data

    def _error(self, what: str, err: Exception | None = None) -> StreamError:
        detail = f": {err}" if err is not None else ""
        # Input goes to the decoder 64 KiB at a time: the fault lies in the
        # chunk that ends at _in_pos, the decoder having output self.pos bytes.
        return StreamError(
            f"{what}{detail} (compressed bytes read: {self._in_pos}, "
            f"tar bytes decoded: {self.pos})",
            path=self._shown,
            errno=_errno.EIO,
            hint="the archive is damaged or was cut short; copy it again",
        )

    def _after_frame(self) -> bool:
        """At the end of a gzip member or zstd frame: start the next one, or finish."""
        rest = self._frames.unused() + self._in
        self._in = b""
        while len(rest) < 4:
            more = self._raw()
            if not more:
                break
            rest += more
        if not rest:
            self._done = True
            return False
        if (self.kind is Compression.GZIP and rest.startswith(GZIP_MAGIC)) or (
            self.kind is Compression.ZSTD and is_zstd(rest)
        ):
            self._frames.next_frame()
            self._in = rest
            return True
        # Zero padding after the stream (tape-style blocking) is tolerated, as
        # gzip(1) does; anything else is not ours to guess about.
        while rest:
            if rest.count(0) != len(rest):
                raise self._error(f"unexpected data after the {self.kind.value} stream")
            rest = self._raw()
        self._done = True
        return False

    def _produce(self) -> bytes:
        """The next decompressed chunk (at most 1 MiB); b"" at the end of the stream."""
        while not self._done:
            frames = self._frames
            if frames.eof:
                if not self._after_frame():
                    break
                continue
            if self.kind is Compression.GZIP:
                at_end = False
                if not self._in:
                    self._in = self._raw()
                    at_end = not self._in
                try:
                    # With no input left zlib may still hold output a full
                    # buffer cut off: one call with b"" collects it.
                    out = frames._zlib.decompress(self._in, _OUT_CHUNK)
                except zlib.error as err:
                    raise self._error("corrupt gzip stream", err) from err
                self._in = frames._zlib.unconsumed_tail
                if at_end and not out and not frames.eof:
                    raise self._error("truncated gzip stream: the file ends inside it")
            else:
                data = b""
                if not self._zstd_more:
                    data = self._in or self._raw()
                    self._in = b""
                    if not data:
                        raise self._error("truncated zstd stream: the file ends inside it")
                try:
                    out = frames._zstd.decompress(data, _OUT_CHUNK)
                except _zstd().ZstdError as err:
                    raise self._error("corrupt zstd stream", err) from err
                self._zstd_more = not frames._zstd.needs_input and not frames._zstd.eof
            if out:
                return out
        return b""

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        want = n
        while want:
            if self._out_at >= len(self._out):
                self._out, self._out_at = self._produce(), 0
                if not self._out:
                    break
            take = self._out[self._out_at : self._out_at + want]
            self._out_at += len(take)
            parts.append(take)
            want -= len(take)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        want = n
        while want:
            if self._out_at >= len(self._out):
                self._out, self._out_at = self._produce(), 0
                if not self._out:
                    break
            take = min(want, len(self._out) - self._out_at)
            self._out_at += take
            want -= take
        self.pos += n - want
        return n - want

    def chunks(self) -> bytes:
        """The next piece of the stream, of whatever size is at hand (b"" at the end)."""
        data = self._out[self._out_at :] if self._out_at < len(self._out) else self._produce()
        self._out, self._out_at = b"", 0
        self.pos += len(data)
        return data


# --- format parameters kept by a rewrite ---------------------------------------------


class GzipParams(Value):
    """The first gzip member's header, kept byte for byte, and the level it suggests."""

    header: bytes
    level: int


class ZstdParams(Value):
    checksum: bool
    level: int = 3  # libzstd's default; a frame does not record its level


_GZIP_FIXED = struct.Struct("<2sBBIBB")  # magic, method, flags, mtime, xfl, os
_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16


def gzip_params(head: bytes, shown: str) -> GzipParams:
    """Parse the first gzip header (RFC 1952, section 2.3) from the file's first bytes."""

    def bad(what: str) -> ImageError:
        return ImageError(f"malformed gzip header: {what}", path=shown, offset=0)

    if len(head) < _GZIP_FIXED.size:
        raise bad("too short")
    magic, method, flags, _mtime, xfl, _os = _GZIP_FIXED.unpack_from(head)
    if magic != GZIP_MAGIC or method != 8:
        raise bad(f"compression method {method} is not deflate")
    pos = _GZIP_FIXED.size
    if flags & _FEXTRA:
        if len(head) < pos + 2:
            raise bad("extra field cut short")
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = head.find(b"\x00", pos)
            if end < 0:
                raise bad("file name or comment longer than the first 64 KiB")
            pos = end + 1
    if flags & _FHCRC:
        pos += 2
    if pos > len(head):
        raise bad("cut short")
    # XFL 2: "compressor used maximum compression", 4: "fastest algorithm".
    level = {2: 9, 4: 1}.get(xfl, 6)
    return GzipParams(head[:pos], level)


def zstd_params(head: bytes) -> ZstdParams:
    """The content-checksum flag of the first real zstd frame (skippable frames skipped)."""
    pos = 0
    while len(head) >= pos + 8 and head[pos : pos + 4] != ZSTD_MAGIC:
        if not is_zstd(head[pos : pos + 4]):
            break
        pos += 8 + int.from_bytes(head[pos + 4 : pos + 8], "little")
    if head[pos : pos + 4] == ZSTD_MAGIC and len(head) > pos + 4:
        return ZstdParams(checksum=bool(head[pos + 4] & 0x04))
    return ZstdParams(checksum=True)


# --- sinks ---------------------------------------------------------------------


class FdWriter:
    """Buffered writes to an fd (the temp file of a rewrite)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf: list[bytes] = []
        self._len = 0
        self.written = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._buf.append(data)
        self._len += len(data)
        if self._len >= _OUT_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        view = memoryview(b"".join(self._buf))
        self._buf, self._len = [], 0
        while view:
            n = os.write(self._fd, view)
            self.written += n
            view = view[n:]


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class GzipSink:
    """One gzip member: the original header, raw deflate, CRC-32 and size trailer."""

    def __init__(self, out: FdWriter, params: GzipParams) -> None:
        self._out = out
        self._deflate = zlib.compressobj(params.level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        out.write(params.header)

    def write(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._out.write(self._deflate.compress(data))

    def close(self) -> None:
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        self._out.flush()


class ZstdSink:
    """One zstd frame."""

    def __init__(self, out: FdWriter, params: ZstdParams) -> None:
        self._out = out
        zstd = _zstd()
        self._zstd_module = zstd
        param = zstd.CompressionParameter
        self._zstd = zstd.ZstdCompressor(
            options={
                param.compression_level: params.level,
                param.checksum_flag: int(params.checksum),
            }
        )

    def write(self, data: bytes) -> None:
        self._out.write(self._zstd.compress(data))

    def close(self) -> None:
        self._out.write(self._zstd.flush(self._zstd_module.ZstdCompressor.FLUSH_FRAME))
        self._out.flush()
