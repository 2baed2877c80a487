"""The tar format, read strictly and patched exactly.

Grammar (POSIX.1-2001 pax / ustar, GNU tar's extensions)::

    archive  := member* zero-block [anything]
    member   := ext-header* header data pad
    header   := 512-byte block: name[100] mode[8] uid[8] gid[8] size[12]
                mtime[12] chksum[8] typeflag[1] linkname[100] magic[6]
                version[2] uname[32] gname[32] devmajor[8] devminor[8]
                prefix[155] (ustar; GNU keeps atime/ctime and sparse maps there)
    ext-header := header (type x: pax records for the next member;
                g: pax records for all that follow; L/K: GNU long name/link)
                  data pad
    pax record := "<len> <key>=<value>\\n"     (len counts the whole record)
    pad      := zeros up to a multiple of 512
    numbers  := octal digits ending in NUL or space, or base-256 (first byte 0x80)
    chksum   := sum of the header's bytes, chksum counted as 8 spaces

Why not ``tarfile``: its reader ends the archive silently at a bad or cut
header, accepts a member whose data runs past the end of the file, and the
3.11 builds this project runs have known pax-header and negative-offset
denial-of-service bugs (CVE-2024-6232, CVE-2025-8194). A checkpoint archive is
hostile input; this walker reads only headers, bounds every extended header,
rejects what it does not understand where it matters, and keeps every header
byte so that a rewrite changes nothing but an mm member's size and checksum.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images.archive.streams import BLOCK, Source
from criu_aio_plugin.values import Value

# Where the fields of a header block are (offset, length).
_NAME = (0, 100)
_MODE = (100, 8)
_SIZE = (124, 12)
_CHKSUM = (148, 8)
_TYPE = 156
_LINKNAME = (157, 100)
_MAGIC = (257, 8)  # magic and version together
_PREFIX = (345, 155)
# GNU sparse ('S') headers: isextended flag and real size, after 4 map entries.
_GNU_ISEXTENDED = 482
_GNU_REALSIZE = (483, 12)
_GNU_EXT_ISEXTENDED = 504

USTAR = b"ustar\x0000"
GNU = b"ustar  \x00"

REGULAR = (b"0", b"\x00", b"7")  # regular file, old regular, contiguous file
DIRECTORY = b"5"
SYMLINK = b"2"
HARDLINK = b"1"
CHAR_DEVICE, BLOCK_DEVICE, FIFO = b"3", b"4", b"6"
GNU_SPARSE = b"S"
PAX_LOCAL, PAX_GLOBAL = b"x", b"g"
GNU_LONGNAME, GNU_LONGLINK = b"L", b"K"
_EXTENDED = (PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK)

# Extended headers hold names and a few attributes: a megabyte is generous,
# and bounds what a hostile header can make us hold.
MAX_EXTENDED_SIZE = 1 << 20
MAX_EXTENDED_HEADERS = 16

_KIND = {
    DIRECTORY: "a directory",
    SYMLINK: "a symbolic link",
    HARDLINK: "a hard link",
    CHAR_DEVICE: "a character device",
    BLOCK_DEVICE: "a block device",
    FIFO: "a FIFO",
    GNU_SPARSE: "a GNU sparse file",
}


class Member(Value):
    """One archive member, located exactly.

    ``offset`` is where its first (extended) header starts, ``data_offset``
    where its data starts, ``stored`` how many data bytes the archive holds
    (for a sparse member fewer than ``size``, the file's real size) and
    ``end`` where the next member starts. ``header`` is every byte from
    ``offset`` to ``data_offset``.
    """

    name: str
    typeflag: bytes
    offset: int
    data_offset: int
    size: int
    stored: int
    linkname: str
    header: bytes
    pax: dict[str, str]
    sparse: bool = False

    def __repr__(self) -> str:
        return (
            f"Member({self.name!r}, type {self.typeflag!r}, at {self.offset}, {self.stored} bytes)"
        )

    @property
    def end(self) -> int:
        return self.data_offset + padded(self.stored)

    @property
    def is_regular(self) -> bool:
        return self.typeflag in REGULAR and not self.sparse

    @property
    def kind(self) -> str:
        if self.sparse:
            return "a sparse file"
        if self.typeflag in REGULAR:
            return "a regular file"
        return _KIND.get(self.typeflag, f"a member of tar type {self.typeflag!r}")


def padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _field(block: bytes, where: tuple[int, int]) -> bytes:
    return block[where[0] : where[0] + where[1]]


def parse_number(raw: bytes) -> int | None:
    """A numeric header field: octal (NUL/space padded) or positive base-256; else None."""
    if raw and raw[0] == 0x80:
        return int.from_bytes(raw[1:], "big")
    if raw and raw[0] & 0x80:  # negative base-256 (0xff) or garbage
        return None
    text = raw.replace(b"\x00", b" ").strip(b" ")
    if not text:
        return 0
    if any(c not in b"01234567" for c in text):
        return None
    return int(text, 8)


def format_number_like(old: bytes, value: int) -> bytes | None:
    """``value`` written the way ``old`` was: same width, padding and terminator.

    Octal ``[spaces] digits [NUL/space...]`` keeps its digit count (spaces
    before the digits make room if the value needs more); base-256 stays
    base-256. None when the value does not fit the field.
    """
    width = len(old)
    if old[:1] == b"\x80":
        if value >= 1 << (8 * (width - 1)):
            return None
        return b"\x80" + value.to_bytes(width - 1, "big")
    lead = len(old) - len(old.lstrip(b" "))
    rest = old[lead:]
    digits = len(rest) - len(rest.lstrip(b"01234567"))
    tail = rest[digits:]
    if digits == 0:  # an empty field: write it the common way, digits and a NUL
        lead, digits, tail = 0, width - 1, b"\x00"
    text = f"{value:o}".encode()
    if len(text) > lead + digits:
        return None
    if len(text) <= digits:
        return b" " * lead + text.rjust(digits, b"0") + tail
    return text.rjust(lead + digits, b" ") + tail


def checksum(block: bytes) -> int:
    """The unsigned header checksum, with the checksum field counted as spaces."""
    start, length = _CHKSUM
    return sum(block[:start]) + 8 * 0x20 + sum(block[start + length : BLOCK])


def _signed_checksum(block: bytes) -> int:
    start, length = _CHKSUM
    signed = [b - 256 if b > 127 else b for b in block[:BLOCK]]
    return sum(signed[:start]) + 8 * 0x20 + sum(signed[start + length :])


def checksum_ok(block: bytes) -> bool:
    stored = parse_number(_field(block, _CHKSUM))
    # Some old tars summed signed chars; every reader accepts both.
    return stored is not None and stored in (checksum(block), _signed_checksum(block))


def with_checksum(block: bytes) -> bytes:
    """``block`` with its checksum field recomputed, written as it was written."""
    start, length = _CHKSUM
    old = block[start : start + length]
    new = format_number_like(old, checksum(block))
    if new is None:  # pragma: no cover - a checksum always fits 6 octal digits
        new = b"%06o\x00 " % checksum(block)
    return block[:start] + new + block[start + length :]


def _cstring(raw: bytes) -> bytes:
    end = raw.find(b"\x00")
    return raw if end < 0 else raw[:end]


def _decode_name(raw: bytes) -> str:
    # Names are bytes; surrogateescape keeps any byte (and so the exact name).
    return raw.decode("utf-8", "surrogateescape")


def parse_pax(data: bytes, where: str, offset: int) -> list[tuple[str, str, int, int]]:
    """Records of a pax extended header: (key, value, start, end) in ``data``."""
    out: list[tuple[str, str, int, int]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0 and data.count(0, pos) == len(data) - pos:  # NUL padding
            break
        space = data.find(b" ", pos, pos + 21)
        if space <= pos or not data[pos:space].isdigit():
            raise ImageError("malformed pax record length", path=where, offset=offset + pos)
        length = int(data[pos:space])
        end = pos + length
        if length < 5 or end > len(data) or data[end - 1] != 0x0A:
            raise ImageError("malformed pax record", path=where, offset=offset + pos)
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise ImageError("pax record without key=value", path=where, offset=offset + pos)
        out.append(
            (
                key.decode("utf-8", "surrogateescape"),
                value.decode("utf-8", "surrogateescape"),
                pos,
                end,
            )
        )
        pos = end
    return out


def _pax_number(value: str, key: str, where: str, offset: int) -> int:
    if not value.isdigit() or not value.isascii():
        raise ImageError(f"pax {key}={value!r} is not a size", path=where, offset=offset)
    return int(value)


class TarWalker:
    """Walk the members of a tar read from a forward-only ``Source``.

    ``members()`` yields each member once its headers are read; the consumer
    may ``read_data`` it before asking for the next one, otherwise the walker
    skips its data. The walk ends at the end-of-archive block; a stream that
    ends before it, or inside a member, raises ``ImageError`` naming the
    member. ``end`` is then where the end-of-archive block starts.
    """

    def __init__(self, source: Source, shown: str) -> None:
        self._src = source
        self._shown = shown
        self.end = -1
        self.last: Member | None = None
        self.inside: Member | None = None  # the member whose data is being read or skipped

    def _where(self, member: str | None = None) -> str:
        return f"{self._shown}:{member}" if member else self._shown

    def _block(self, what: str) -> bytes:
        at = self._src.pos
        block = self._src.read(BLOCK)
        if len(block) < BLOCK:
            after = f" after member {self.last.name}" if self.last else ""
            raise ImageError(
                f"truncated: the archive ends at byte {at + len(block)}, inside {what}{after}"
                " (no end-of-archive block)",
                path=self._shown,
                offset=at,
                hint="the archive was cut short; copy it again",
            )
        return block

    def _data(self, n: int, what: str, at: int) -> bytes:
        data = self._src.read(n)
        if len(data) < n:
            raise ImageError(
                f"truncated: {what} needs {n} bytes, the archive ends after {len(data)}",
                path=self._shown,
                offset=at,
                hint="the archive was cut short; copy it again",
            )
        self._src.skip(padded(n) - n)
        return data

    def _finish(self, member: Member) -> None:
        """Move to the end of ``member``'s data, proving the data is there."""
        if self._src.pos > member.end:  # pragma: no cover - read_data reads no further
            raise AssertionError("read past a member")
        want = member.end - self._src.pos
        if self._src.skip(want) < want:
            raise ImageError(
                f"its header says {member.stored} bytes, but the archive ends "
                f"{member.end - self._src.pos} bytes short of them",
                path=self._where(member.name),
                offset=member.data_offset,
                errno=_errno.EIO,
                hint="the archive was cut short, or the member's header lies about its size",
            )

    def read_data(self, member: Member) -> bytes:
        """The data of the member just yielded (before asking for the next)."""
        if self._src.pos != member.data_offset:
            raise AssertionError("read_data after the walk moved on")
        data = self._src.read(member.stored)
        if len(data) < member.stored:
            raise ImageError(
                f"its header says {member.stored} bytes, the archive ends after {len(data)}",
                path=self._where(member.name),
                offset=member.data_offset,
                errno=_errno.EIO,
                hint="the archive was cut short, or the member's header lies about its size",
            )
        return data

    def members(self) -> Iterator[Member]:
        global_pax: dict[str, str] = {}
        while True:
            member = self._next(global_pax)
            if member is None:
                return
            self.last = self.inside = member
            yield member
            self._finish(member)
            self.inside = None

    def where_now(self) -> tuple[str, str]:
        """(path, words) naming where the walk is: inside a member, or after one."""
        if self.inside is not None:
            return self._where(self.inside.name), ""
        if self.last is not None:
            return self._shown, f" (after member {self.last.name})"
        return self._shown, ""

    def _next(self, global_pax: dict[str, str]) -> Member | None:
        start = self._src.pos
        header = bytearray()
        long_name: str | None = None
        long_link: str | None = None
        pax: dict[str, str] = {}
        for _ in range(MAX_EXTENDED_HEADERS + 1):
            at = self._src.pos
            block = self._block("a member header")
            if block.count(0) == BLOCK:
                if header:
                    raise ImageError(
                        "an extended header is followed by the end of the archive",
                        path=self._shown,
                        offset=at,
                    )
                self.end = at
                return None
            if not checksum_ok(block):
                after = f" (after member {self.last.name})" if self.last else ""
                raise ImageError(
                    f"not a valid tar header: bad checksum{after}",
                    path=self._shown,
                    offset=at,
                    hint="the archive is damaged",
                )
            header += block
            typeflag = block[_TYPE : _TYPE + 1]
            size = parse_number(_field(block, _SIZE))
            if size is None:
                raise ImageError("tar header with a malformed size", path=self._shown, offset=at)
            if typeflag not in _EXTENDED:
                return self._member(
                    block, bytes(header), start, at, size, pax, global_pax, long_name, long_link
                )
            if size > MAX_EXTENDED_SIZE:
                raise ImageError(
                    f"extended header of {size} bytes (more than {MAX_EXTENDED_SIZE})",
                    path=self._shown,
                    offset=at,
                )
            data = self._data(size, "an extended header", at + BLOCK)
            header += data + bytes(padded(size) - size)
            if typeflag == GNU_LONGNAME:
                long_name = _decode_name(_cstring(data))
            elif typeflag == GNU_LONGLINK:
                long_link = _decode_name(_cstring(data))
            else:
                records = {k: v for k, v, _, _ in parse_pax(data, self._shown, at + BLOCK)}
                if typeflag == PAX_LOCAL:
                    pax.update(records)
                else:
                    for key in ("path", "linkpath", "size"):
                        if key in records:
                            raise ImageError(
                                f"a global pax header sets {key!r} for every member",
                                path=self._shown,
                                offset=at,
                            )
                    global_pax.update(records)
        raise ImageError(
            f"more than {MAX_EXTENDED_HEADERS} extended headers in a row",
            path=self._shown,
            offset=start,
        )

    def _member(
        self,
        block: bytes,
        header: bytes,
        start: int,
        at: int,
        size: int,
        pax: dict[str, str],
        global_pax: dict[str, str],
        long_name: str | None,
        long_link: str | None,
    ) -> Member:
        typeflag = block[_TYPE : _TYPE + 1]
        name = _decode_name(_cstring(_field(block, _NAME)))
        if block[257:265] == USTAR:
            prefix = _cstring(_field(block, _PREFIX))
            if prefix:
                name = _decode_name(prefix) + "/" + name
        name = pax.get("path", long_name if long_name is not None else name)
        linkname = pax.get(
            "linkpath",
            long_link
            if long_link is not None
            else _decode_name(_cstring(_field(block, _LINKNAME))),
        )
        stored = size
        if "size" in pax:
            stored = _pax_number(pax["size"], "size", self._where(name), start)
        real = stored
        sparse = False
        if typeflag == GNU_SPARSE:
            sparse = True
            realsize = parse_number(_field(block, _GNU_REALSIZE))
            real = stored if realsize is None else realsize
            extended = block[_GNU_ISEXTENDED]
            while extended:
                ext_at = self._src.pos
                ext = self._block("a GNU sparse map")
                header += ext
                extended = ext[_GNU_EXT_ISEXTENDED]
                if len(header) > MAX_EXTENDED_SIZE:
                    raise ImageError(
                        "GNU sparse map too long", path=self._where(name), offset=ext_at
                    )
        gnu_sparse = {k: v for k, v in pax.items() if k.startswith("GNU.sparse.")}
        if gnu_sparse:
            sparse = True
            for key in ("GNU.sparse.realsize", "GNU.sparse.size"):
                if key in gnu_sparse:
                    real = _pax_number(gnu_sparse[key], key, self._where(name), start)
                    break
            if "GNU.sparse.name" in gnu_sparse:
                name = gnu_sparse["GNU.sparse.name"]
        if typeflag in (HARDLINK, SYMLINK, CHAR_DEVICE, BLOCK_DEVICE, FIFO, DIRECTORY):
            # Header-only types: no data follows, whatever the size field
            # says (what tar, Go's archive/tar and Python's tarfile all do).
            stored = real = 0
        return Member(
            name=name,
            typeflag=typeflag,
            offset=start,
            data_offset=self._src.pos,
            size=real,
            stored=stored,
            linkname=linkname,
            header=header,
            pax=pax,
            sparse=sparse,
        )


# --- patching a header chain ----------------------------------------------------------


def resize_header(member: Member, new_size: int, shown: str) -> bytes:
    """``member.header`` for data of ``new_size`` bytes: size fields and checksums only.

    The main header's size field is rewritten in its own format; a pax ``size``
    record, if the writer put one, is rewritten too (its record length and the
    pax header's own size follow). Every other byte stays.
    """
    where = f"{shown}:{member.name}"
    if member.typeflag not in REGULAR or member.sparse:
        raise ImageError(f"cannot resize {member.kind}", path=where)
    chain = member.header
    out = bytearray()
    pos = 0
    while pos < len(chain):
        block = chain[pos : pos + BLOCK]
        typeflag = block[_TYPE : _TYPE + 1]
        size = parse_number(_field(block, _SIZE))
        assert size is not None  # parsed before
        if typeflag not in _EXTENDED:
            out += _set_size(block, new_size, where)
            pos += BLOCK
            if pos != len(chain):  # pragma: no cover - only sparse maps follow, refused above
                raise ImageError("unexpected blocks after the member header", path=where)
            break
        data = chain[pos + BLOCK : pos + BLOCK + size]
        if typeflag == PAX_LOCAL and any(k == "size" for k, _, _, _ in parse_pax(data, where, 0)):
            data = _set_pax_size(data, new_size, where)
            out += _set_size(block, len(data), where)
            out += data + bytes(padded(len(data)) - len(data))
        else:
            out += chain[pos : pos + BLOCK + padded(size)]
        pos += BLOCK + padded(size)
    return bytes(out)


def _set_size(block: bytes, size: int, where: str) -> bytes:
    start, length = _SIZE
    new = format_number_like(block[start : start + length], size)
    if new is None:
        raise ImageError(f"size {size} does not fit the member's header field", path=where)
    return with_checksum(block[:start] + new + block[start + length :])


def pax_record(key: str, value: str) -> bytes:
    """One pax record; its length prefix counts itself."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _set_pax_size(data: bytes, size: int, where: str) -> bytes:
    parts: list[bytes] = []
    pos = 0
    for key, _, start, end in parse_pax(data, where, 0):
        if key == "size":
            parts.append(data[pos:start])
            parts.append(pax_record("size", str(size)))
            pos = end
    parts.append(data[pos:])
    return b"".join(parts)
