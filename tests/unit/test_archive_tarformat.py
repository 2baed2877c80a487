"""The tar layer: numeric fields, checksums, pax records, header resizing, and fuzzing."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testbed import archives

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images.archive import read_archive
from criu_aio_plugin.images.archive.streams import PlainSource
from criu_aio_plugin.images.archive.tarformat import (
    TarWalker,
    checksum_ok,
    format_number_like,
    parse_number,
    pax_record,
    resize_header,
)

# (field as written, value): parsed one way, written back the other.
NUMBERS = [
    (b"00000001750\x00", 1000),  # GNU tar, Python, Go: 11 digits and NUL
    (b"0000001750 \x00", 1000),  # old tars: digits, space, NUL
    (b"      1750 \x00", 1000),  # space-padded on the left
    (b"000644 \x00", 0o644),  # mode field of 8
    (b"\x80" + (10 << 30).to_bytes(11, "big"), 10 << 30),  # base-256 (GNU, > 8 GiB)
    (b"77777777777\x00", 8**11 - 1),
]


@pytest.mark.parametrize(("raw", "value"), NUMBERS)
def test_numbers_both_ways(raw: bytes, value: int) -> None:
    assert parse_number(raw) == value
    assert format_number_like(raw, value) == raw


def test_a_number_keeps_its_layout_when_it_changes() -> None:
    assert format_number_like(b"00000001750\x00", 1001) == b"00000001751\x00"
    assert format_number_like(b"      1750 \x00", 0o177777) == b"    177777 \x00"
    assert format_number_like(b"77777777777\x00", 8**11) is None  # does not fit
    assert parse_number(b"\xff" * 12) is None  # negative base-256
    assert parse_number(b"12345678\x00\x00\x00\x00") is None  # not octal


@pytest.mark.parametrize(
    ("key", "value"),
    [("size", "1"), ("size", "123456"), ("path", "x" * 90), ("path", "x" * 94), ("a", "")],
)
def test_pax_records_count_their_own_length(key: str, value: str) -> None:
    record = pax_record(key, value)
    length, _, rest = record.partition(b" ")
    assert int(length) == len(record)
    assert rest == f"{key}={value}\n".encode()
    if key != "path":
        return
    # Python's tarfile reads a pax header made of our record.
    ext = tarfile.TarInfo("././@PaxHeader")
    ext.type, ext.size = tarfile.XHDTYPE, len(record)
    body = tarfile.TarInfo("short")
    raw = ext.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + record + bytes(-len(record) % 512)
    raw += body.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + bytes(1024)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert tf.getnames() == [value]


def test_resize_header_changes_only_size_and_checksum() -> None:
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            info = tarfile.TarInfo("checkpoint/mm-1.img")
            info.size, info.mtime, info.uname = 5, 1_700_000_000, "root"
            tf.addfile(info, io.BytesIO(b"hello"))
        raw = buf.getvalue()
        walker = TarWalker(PlainSource(_fd(raw), len(raw), "t.tar"), "t.tar")
        (member,) = list(walker.members())
        new = resize_header(member, 4096, "t.tar")
        assert len(new) == 512 and checksum_ok(new)
        outside = [*range(0, 124), *range(136, 148), *range(156, 512)]
        assert [new[i] for i in outside] == [member.header[i] for i in outside]
        assert parse_number(new[124:136]) == 4096


def _fd(data: bytes) -> int:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        return os.dup(f.fileno())


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("fuzz")
    images = archives.synthetic_images(work / "images", {7: [1, 2]}, pages=8192)
    return archives.write_tar(work / "sound.tar", archives.sound_members(images)).read_bytes()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_archives_give_image_errors_only(
    sound: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    """Random byte flips, cuts and garbage: a result or an ImageError, nothing else."""
    raw = bytearray(sound)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    blob = bytes(raw)
    if data.draw(st.booleans()):
        blob = gzip.compress(blob)
        if data.draw(st.booleans()):
            cut = bytearray(blob)
            cut[data.draw(st.integers(0, len(cut) - 1))] ^= 0xFF
            blob = bytes(cut)
    path = tmp_path / "fuzzed.tar"
    path.write_bytes(blob)
    with contextlib.suppress(ImageError):
        read_archive(path)
