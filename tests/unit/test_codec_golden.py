"""Golden mm images from a real CRIU 4.1.1 dump (tests/data/make_mm_golden.py).

No CRIU needed: byte identity of decode-then-encode, our decoding against what
Debian's pycriu decoded from the same files, and the splice against pycriu's own
re-encoding (k-minus-2 was written by pycriu's encoder with nr_req = k - 2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from criu_aio_plugin.images import codec, mm, rewrite, splice
from criu_aio_plugin.kernel.arithmetic import criu_formula

DATA = Path(__file__).resolve().parent.parent / "data" / "mm"
CASES = ("criu-4.1.1", "k-minus-2")
IMAGES = [(case, p.name) for case in CASES for p in sorted((DATA / case).glob("mm-*.img"))]


def _pycriu(case: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / case / "pycriu.json").read_text())
    return doc


def _ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def test_golden_data_is_there() -> None:
    assert len(IMAGES) == 6


@pytest.mark.parametrize(("case", "name"), IMAGES)
def test_decode_encode_is_byte_identical(case: str, name: str) -> None:
    data = (DATA / case / name).read_bytes()
    assert codec.dumps(codec.loads(data, name)) == data
    assert codec.dumps_raw(codec.loads_raw(data, name)) == data
    with open(DATA / case / name, "rb") as f:
        assert codec.dumps(codec.load(f, name)) == data


@pytest.mark.parametrize(("case", "name"), IMAGES)
def test_decoding_agrees_with_pycriu(case: str, name: str) -> None:
    theirs = _pycriu(case)[name]
    image = codec.loads((DATA / case / name).read_bytes(), name)
    ours = {
        "magic": image.name,
        "entries": [MessageToDict(e, preserving_proto_field_name=True) for e in image.entries],
    }
    assert _ints(ours) == _ints(theirs)
    rings = mm.parse_mm((DATA / case / name).read_bytes(), name, 0)
    assert [(r.ring_id, r.nr_req, r.ring_len) for r in rings] == [
        (int(a["id"]), int(a["nr_req"]), int(a["ring_len"])) for a in theirs["entries"][0]["aios"]
    ]
    assert len(rings) == 4


@pytest.mark.parametrize("name", [n for c, n in IMAGES if c == CASES[0]])
def test_splice_matches_pycriu_reencoding(name: str) -> None:
    good = (DATA / "criu-4.1.1" / name).read_bytes()
    bad = (DATA / "k-minus-2" / name).read_bytes()
    rings = mm.parse_mm(good, name, 0)
    k_minus_2 = {r.ring_id: (r.ring_len - 32) // 32 - 2 for r in rings}
    assert splice.splice(good, name, k_minus_2) == bad
    assert splice.splice(bad, name, {r.ring_id: r.nr_req for r in rings}) == good
    assert all(r.nr_req == criu_formula(r.ring_len) for r in rings)


def test_fix_and_revert_on_golden_copy(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    shutil.copytree(DATA / "k-minus-2", d)
    wanted = {(r.file, r.ring_id): criu_formula(r.ring_len) for r in mm.read_rings(d)}
    result = rewrite.apply_fix(d, wanted)
    assert result.written and len(result.changes) == 12
    for p in sorted((DATA / "criu-4.1.1").glob("mm-*.img")):
        assert (d / p.name).read_bytes() == p.read_bytes()
    rewrite.revert(d)
    for p in sorted((DATA / "k-minus-2").glob("mm-*.img")):
        assert (d / p.name).read_bytes() == p.read_bytes()
