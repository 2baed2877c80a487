"""Property tests over the decoder: hostile bytes never crash it, valid ones round-trip.

The decoder's only way to fail is ``ImageError`` (with a path and an offset or
field); no input makes it raise anything else or allocate beyond the input.
Marked ``fuzz``: few examples by default, 10,000 each under the fuzz profile
(tests/conftest.py).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_mm_pb2
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import codec, mm, splice, synthetic

HEADER = struct.pack("<II", codec.IMG_COMMON_MAGIC, codec.MM_MAGIC)
SEED_IMAGE = synthetic.mm_image_bytes(synthetic.rings_for([1, 2, 4]), 12, 7)

pytestmark = pytest.mark.fuzz


def _decode(data: bytes) -> tuple[mm.ImageRing, ...] | None:
    """parse_mm's result, or None after checking the ImageError it raised."""
    try:
        return mm.parse_mm(data, "fuzz.img", 1)
    except ImageError as err:
        assert err.path == "fuzz.img"
        assert err.offset is not None or err.field is not None
        if err.offset is not None:
            assert 0 <= err.offset <= len(data)
        return None


@given(st.binary(max_size=64))
def test_arbitrary_payload_after_a_valid_header(payload: bytes) -> None:
    data = HEADER + struct.pack("<I", len(payload)) + payload
    _decode(data)
    try:
        fields = protowire.walk(payload)
    except protowire.WireError as err:
        assert 0 <= err.offset <= len(payload)
        try:
            protowire.find(payload, 16)
        except protowire.WireError:
            pass
        else:
            raise AssertionError("find accepted what walk rejected") from None
    else:
        assert protowire.find(payload, 16) == [f for f in fields if f.number == 16]


@given(
    st.lists(
        st.tuples(st.integers(0, len(SEED_IMAGE) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    st.integers(0, len(SEED_IMAGE)),
)
def test_mutated_real_shaped_image(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SEED_IMAGE)
    for pos, value in edits:
        data[pos] = value
    mutated = bytes(data[:cut] if cut < 40 else data)
    rings = _decode(mutated)
    if rings is not None:
        # Whatever decodes can be spliced, and the splice decodes to the same rings
        # with the new nr_req.
        new = splice.splice(mutated, "fuzz.img", {r.ring_id: r.nr_req + 1 for r in rings})
        again = mm.parse_mm(new, "fuzz.img", 1)
        assert [(r.ring_id, r.ring_len, r.nr_req) for r in again] == [
            (r.ring_id, r.ring_len, r.nr_req + 1) for r in rings
        ]


@given(st.binary(max_size=24))
def test_arbitrary_file_bytes(data: bytes) -> None:
    try:
        codec.loads_raw(data, "fuzz.img")
    except ImageError as err:
        assert err.offset is not None and err.offset <= len(data)
    _decode(data)


_u64 = st.integers(0, 2**64 - 1)
_ring = st.builds(
    lambda i, n, pages: criu_aio_mm_pb2.aio_ring_entry(
        id=(i + 1) * 4096, nr_req=n, ring_len=pages * 4096
    ),
    st.integers(0, 2**40),
    st.integers(1, 2**32 - 1),
    st.integers(1, 1000),
)


@given(
    st.lists(_u64, min_size=11, max_size=11),
    st.lists(_u64, max_size=8),
    st.lists(_ring, max_size=6, unique_by=lambda r: r.id),
    st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
)
def test_valid_entries_round_trip(
    mm_fields: list[int],
    auxv: list[int],
    rings: list[criu_aio_mm_pb2.aio_ring_entry],
    dumpable: int | None,
) -> None:
    names = [f.name for f in criu_aio_mm_pb2.mm_entry.DESCRIPTOR.fields][:11]
    e = criu_aio_mm_pb2.mm_entry(exe_file_id=3, **dict(zip(names, mm_fields, strict=True)))
    e.mm_saved_auxv.extend(auxv)
    e.aios.extend(rings)
    if dumpable is not None:
        e.dumpable = dumpable
    data = codec.dumps(codec.Image(codec.MM_MAGIC, [e]))
    assert codec.dumps(codec.loads(data)) == data
    got = mm.parse_mm(data, "p.img", 1)
    assert [(r.ring_id, r.nr_req, r.ring_len) for r in got] == [
        (r.id, r.nr_req, r.ring_len) for r in rings
    ]
    subs = splice.aio_submessages(data, "p.img")
    assert splice.splice(data, "p.img", subs) == data
