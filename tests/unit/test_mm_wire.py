"""The protobuf-free mm reader (``mm_wire``, ``mm.parse_mm_wire``) agrees with protobuf.

``mm.parse_mm_protobuf`` decodes through the protobuf runtime (``codec``), the
reference. Both must accept exactly the same bytes, find the same rings, and
refuse the same inputs with the same kind of error (malformed, missing required
fields named alike, ring checks), on CRIU's golden images and on fuzzed ones.
The restore path must not import protobuf at all.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_mm_pb2
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import codec, mm, rewrite, splice, synthetic
from criu_aio_plugin.images.mm_wire import decode_mm_entry

DATA = Path(__file__).resolve().parent.parent / "data" / "mm"
GOLDEN = sorted(DATA.glob("*/mm-*.img"))
HEADER = struct.pack("<II", codec.IMG_COMMON_MAGIC, codec.MM_MAGIC)
SEED_IMAGE = synthetic.mm_image_bytes(synthetic.rings_for([1, 2, 4]), 12, 7)
SEED_PAYLOAD = SEED_IMAGE[12:]

Outcome = tuple[str, object]


def _outcome(reader: object, data: bytes) -> Outcome:
    """("rings", [...]) or ("error", kind) where kind tells refusals apart."""
    assert callable(reader)
    try:
        rings = reader(data, "x.img", 1)
    except ImageError as err:
        if "lacks required" in str(err):
            return "error", ("required", err.field, err.offset)
        if "malformed" in str(err):
            return "error", ("malformed", err.offset)
        return "error", (str(err), err.offset, err.field)
    return "rings", [(r.ring_id, r.nr_req, r.ring_len) for r in rings]


def _agree(data: bytes) -> Outcome:
    ours = _outcome(mm.parse_mm_wire, data)
    theirs = _outcome(mm.parse_mm_protobuf, data)
    assert ours == theirs, data.hex()
    return ours


def _payload_agrees(payload: bytes) -> None:
    """The entry decoder alone against the runtime: accepted, rings, missing fields."""
    msg = criu_aio_mm_pb2.mm_entry()
    try:
        msg.ParseFromString(payload)
    except Exception:  # DecodeError; its module is the runtime's
        with pytest.raises(protowire.WireError):
            decode_mm_entry(payload)
        return
    aios, missing = decode_mm_entry(payload)
    assert aios == [(a.id, a.nr_req, a.ring_len) for a in msg.aios], payload.hex()
    assert missing == list(getattr(msg, "FindInitializationErrors")()), payload.hex()  # noqa: B009
    _agree(HEADER + struct.pack("<I", len(payload)) + payload)


def test_golden_data_is_there() -> None:
    assert len(GOLDEN) == 6


@pytest.mark.parametrize("path", GOLDEN, ids=[f"{p.parent.name}/{p.name}" for p in GOLDEN])
def test_golden_images_read_alike(path: Path) -> None:
    data = path.read_bytes()
    kind, rings = _agree(data)
    assert kind == "rings" and isinstance(rings, list) and len(rings) == 4
    _payload_agrees(data[12:])


# Hand-picked corners of the wire format, each decided by the runtime.
CORNERS = [
    b"\x08" + b"\xff" * 9 + b"\x7f",  # 10-byte varint, bits past 64 dropped
    b"\x08" + b"\xff" * 10 + b"\x01",  # 11-byte varint
    b"\xff\xff\xff\xff\x7f\x00",  # key past 32 bits
    b"\x88\x80\x80\x80\x80\x00\x05",  # key in 6 bytes
    b"\x88\x80\x80\x80\x00\x05",  # key in 5 bytes
    b"\x00\x01",  # field 0
    b"\x0b\x0c",  # empty group
    b"\x0b\x00\xff\x14\x0c",  # field 0 inside a group
    b"\x0b\x14",  # group closed by another number
    b"\x0c",  # end-group alone
    b"\x0b" * 100 + b"\x0c" * 100,  # the deepest nesting allowed
    b"\x0b" * 101 + b"\x0c" * 101,
    b"\x72\xc7\x01\x01" + b"\x0b" * 99 + b"\x0c" * 99,  # groups inside a vma
    b"\x72\xc9\x01\x01" + b"\x0b" * 100 + b"\x0c" * 100,
    b"\x80\x01\x05",  # aios with a varint: unknown field
    b"\x6a\x03\x01\x02\x03",  # packed auxv
    b"\x6a\x02\x01\x80",  # packed auxv, varint cut
    b"\x72\x80\x80\x80\x80\x00",  # length in 5 bytes
    b"\x72\x80\x80\x80\x80\x80\x00",  # length in 6 bytes
    b"\x82\x01\x07\x10\x85\x80\x80\x80\x10\x08\x01",  # nr_req past 32 bits
    b"\x82\x01\x02\x08\x80\x20",  # varint across the submessage end
    b"\x82\x01\x02\x13\x14",  # a group where nr_req belongs
    b"\x10\x01\x72\x00\x82\x01\x02\x10\x01",  # required fields missing at every level
    b"\x0e",  # wire type 6
]


@pytest.mark.parametrize("payload", CORNERS, ids=[c.hex()[:24] for c in CORNERS])
def test_wire_format_corners(payload: bytes) -> None:
    _payload_agrees(payload)
    _payload_agrees(SEED_PAYLOAD + payload)


@pytest.mark.fuzz
@given(st.binary(max_size=64))
def test_arbitrary_payloads(payload: bytes) -> None:
    _payload_agrees(payload)


_TOKENS = [
    b"\x0b",
    b"\x0c",
    b"\x13",
    b"\x14",
    b"\x00",
    b"\x01",
    b"\x08\x01",
    b"\x88\x80\x80\x80\x00",
    b"\xf8\xff\xff\xff\x0f",
    b"\x72\x02",
    b"\x82\x01\x02",
    b"\x6a\x01",
    b"\x0a\x00",
    b"\x0d\x00\x00\x00\x00",
    b"\xff" * 9 + b"\x7f",
    b"\x10\x85\x80\x80\x80\x10",
    b"\x18\x80\x20",
]


@pytest.mark.fuzz
@given(st.lists(st.sampled_from(_TOKENS), max_size=14))
def test_payloads_of_wire_tokens(tokens: list[bytes]) -> None:
    payload = b"".join(tokens)
    _payload_agrees(payload)
    if len(payload) < 128:
        _payload_agrees(b"\x82\x01" + bytes([len(payload)]) + payload)


@pytest.mark.fuzz
@given(
    st.lists(
        st.tuples(st.integers(0, len(SEED_IMAGE) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    st.integers(0, len(SEED_IMAGE)),
)
def test_mutated_real_shaped_images(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SEED_IMAGE)
    for pos, value in edits:
        data[pos] = value
    _agree(bytes(data[:cut] if cut < 40 else data))


def test_parse_mm_decodes_by_hand_then_with_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small reads stay off protobuf; past the budget the process switches, same answers."""
    calls: list[str] = []
    real_wire, real_protobuf = mm.parse_mm_wire, mm.parse_mm_protobuf

    def wire_reader(data: bytes, path: str, pid: int) -> tuple[mm.ImageRing, ...]:
        calls.append("wire")
        return real_wire(data, path, pid)

    def protobuf_reader(data: bytes, path: str, pid: int) -> tuple[mm.ImageRing, ...]:
        calls.append("protobuf")
        return real_protobuf(data, path, pid)

    monkeypatch.setattr(mm, "_hand_decoded", 0)
    monkeypatch.setattr(mm, "parse_mm_wire", wire_reader)
    monkeypatch.setattr(mm, "parse_mm_protobuf", protobuf_reader)
    first = mm.parse_mm(SEED_IMAGE, "s.img", 1)
    monkeypatch.setattr(mm, "_hand_decoded", mm.HAND_DECODE_BUDGET)
    assert mm.parse_mm(SEED_IMAGE, "s.img", 1) == first
    assert calls == ["wire", "protobuf"]


def test_rewrite_verification_catches_any_other_change() -> None:
    """verify_rewrite (no protobuf) accepts the splice and nothing else."""
    data = SEED_IMAGE
    rings = mm.parse_mm(data, "v.img", 1)
    image = mm.MmImage("mm-1.img", "v.img", 1, data, Path(__file__).stat(), rings)
    wanted = {rings[1].ring_id: rings[1].nr_req + 5}
    new = splice.splice(data, "v.img", wanted)
    rewrite.verify_rewrite(image, new, wanted)
    with pytest.raises(ImageError, match="nr_req"):
        rewrite.verify_rewrite(image, new, {rings[1].ring_id: rings[1].nr_req + 6})
    for pos in range(12, len(new)):
        damaged = bytearray(new)
        damaged[pos] ^= 0x01
        with pytest.raises(ImageError):
            rewrite.verify_rewrite(image, bytes(damaged), wanted)


def test_restore_path_modules_import_no_protobuf() -> None:
    code = (
        "import sys\n"
        "import criu_aio_plugin.rpc.aio_work, criu_aio_plugin.images.mm\n"
        "import criu_aio_plugin.images.rewrite, criu_aio_plugin.decision.checkpoint\n"
        "import criu_aio_plugin.kernel.live, criu_aio_plugin.kernel.select\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    root = str(Path(mm.__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {root!r})\n{code}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = [m for m in out if m.startswith(("google", "criu_aio_plugin._proto"))]
    assert not heavy, f"protobuf imported on the restore path: {heavy}"
