"""Our mm reading against Debian's pycriu, on real CRIU dumps.

Every mm image of a real checkpoint (a process tree with rings of several sizes,
some with pending events, one process without rings) must: decode and re-encode
to the same bytes with our codec; give the same rings through ``read_rings``
as pycriu's decoder; and agree with pycriu field by field on the mm_entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from images_helpers import mm_images, pycriu_decode
from testbed.harness import PyCriu, RingSpec, n_for_pages

from criu_aio_plugin.images import codec, mm, splice

pytestmark = [pytest.mark.criu, pytest.mark.e2e]


def _ours(path: Path) -> dict[str, Any]:
    image = codec.loads(path.read_bytes(), str(path))
    entries = [
        MessageToDict(e, preserving_proto_field_name=True, use_integers_for_enums=True)
        for e in image.entries
    ]
    return {"magic": image.name, "entries": entries}


def _normalise(value: Any) -> Any:
    """pycriu and json_format differ in integer spelling (int vs "int" for 64-bit)."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def test_reading_agrees_with_pycriu(checkpoint: Any, pycriu: PyCriu) -> None:
    rings = [
        RingSpec(n_for_pages(1), 1),
        RingSpec(n_for_pages(2)),
        RingSpec(n_for_pages(5), 4),
        RingSpec(n_for_pages(16)),
    ]
    cp = checkpoint(rings, children=2, grandchildren=1)
    paths = mm_images(cp.images_dir)
    assert len(paths) == 1 + 2 + 2
    theirs = pycriu_decode(pycriu, paths)
    ours_rings = mm.read_rings(cp.images_dir)
    for path in paths:
        data = path.read_bytes()
        # byte identity, both through protobuf and through the splice path
        assert codec.dumps(codec.loads(data)) == data
        subs = splice.aio_submessages(data, str(path))
        assert splice.splice(data, str(path), subs) == data

        decoded = theirs[str(path)]
        assert decoded["magic"] == "MM"
        their_aios = [
            (int(a["id"]), int(a["nr_req"]), int(a["ring_len"]))
            for a in decoded["entries"][0].get("aios", [])
        ]
        our_aios = [(r.ring_id, r.nr_req, r.ring_len) for r in ours_rings if r.path == str(path)]
        assert our_aios == their_aios
        assert _normalise(_ours(path)) == _normalise(decoded)

    # Against the holders themselves: every ring they reported is in the images.
    reported = {(rep.pid, r.address, r.ring_len) for rep in cp.before.values() for r in rep.rings}
    assert {(r.pid, r.ring_id, r.ring_len) for r in ours_rings} == reported
