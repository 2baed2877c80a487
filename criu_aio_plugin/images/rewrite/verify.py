"""Step 3 of a transaction: prove a new mm image changes nothing but nr_req.

Without protobuf (``criu-aio swrk`` rewrites on a restore's critical path):
the new bytes are decoded again, and compared with the old ones span by span.
"""

from __future__ import annotations

from criu_aio_plugin import protowire
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import raw, splice
from criu_aio_plugin.images.mm import ImageRing, MmImage, parse_mm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def read_back(data: bytes, image: MmImage) -> tuple[ImageRing, ...]:
    """The rings of ``data`` (new bytes for ``image``), validated."""
    return parse_mm(data, image.path, image.pid)


def verify_rewrite(image: MmImage, new: bytes, nr_req: Mapping[int, int]) -> None:
    """Prove ``new`` is ``image`` with exactly the rings' ``nr_req`` changed.

    ``new`` must decode to the same rings with the new nr_req, and match the old
    bytes everywhere (header, every top-level field of the mm_entry, unknown
    fields included) except inside the aios submessages of those rings, where,
    walked field by field, only the nr_req varint may differ, holding the new value.
    """
    path = image.path
    new_rings = read_back(new, image)
    if [(r.ring_id, r.ring_len) for r in new_rings] != [
        (r.ring_id, r.ring_len) for r in image.rings
    ]:
        raise ImageError("internal check failed: the rewrite changed the rings", path=path)
    for old_ring, ring in zip(image.rings, new_rings, strict=True):
        want = nr_req.get(ring.ring_id, old_ring.nr_req)
        if ring.nr_req != want:
            raise ImageError(
                f"internal check failed: ring {ring.ring_id:#x} has nr_req {ring.nr_req}, "
                f"not {want}",
                path=path,
            )
    old_raw, new_raw = raw.loads_raw(image.data, path), raw.loads_raw(new, path)
    old, new_payload = old_raw.entries[0].payload, new_raw.entries[0].payload
    same = (old_raw.magic, old_raw.common_magic, len(old_raw.entries)) == (
        new_raw.magic,
        new_raw.common_magic,
        len(new_raw.entries),
    )
    # Walk the old payload's aios submessages (the new one was fully validated
    # above) and the new payload in step: every byte between them (every other
    # field) must be the same; each submessage is the same, or a changed ring's
    # with the same key and, walked field by field, only its nr_req different.
    pos = new_pos = 0
    for f in _aios(old, path) if same else ():
        gap = old[pos : f.start]
        sub_at = new_pos + len(gap)
        key = old[f.start : protowire.read_key(old, f.start, f.end)[1]]
        same = new_payload[new_pos:sub_at] == gap and (
            new_payload[sub_at : sub_at + f.end - f.start] == old[f.start : f.end]
            or new_payload[sub_at : sub_at + len(key)] == key
        )
        if not same:
            break
        try:
            value_start, value_end = protowire.read_length(
                new_payload, sub_at + len(key), len(new_payload), sub_at
            )
        except protowire.WireError:
            same = False
            break
        new_sub = new_payload[value_start:value_end]
        same = new_sub == old[f.value_start : f.end] or _same_but_nr_req(
            old[f.value_start : f.end], new_sub, nr_req, path
        )
        if not same:
            break
        pos, new_pos = f.end, value_end
    if not same or old[pos:] != new_payload[new_pos:]:
        raise ImageError("internal check failed: the rewrite changed more than nr_req", path=path)


def _aios(payload: bytes, path: str) -> list[protowire.Field]:
    """The aios submessages (field 16, length-delimited); the whole payload is validated."""
    try:
        found = protowire.find(payload, splice.AIOS_FIELD)
    except protowire.WireError as err:
        raise ImageError(f"internal check failed: {err}", path=path) from err
    return [f for f in found if f.wire_type == protowire.LENGTH_DELIMITED]


def _fields(submessage: bytes, path: str) -> list[protowire.Field]:
    try:
        return protowire.walk(submessage, depth=protowire.MAX_DEPTH - 1)
    except protowire.WireError as err:
        raise ImageError(f"internal check failed: {err}", path=path) from err


def _same_but_nr_req(old: bytes, new: bytes, nr_req: Mapping[int, int], path: str) -> bool:
    """One aios submessage: identical but for nr_req varints holding the new value."""
    old_fields, new_fields = _fields(old, path), _fields(new, path)
    ids = [f.value for f in old_fields if f.number == 1 and f.wire_type == protowire.VARINT]
    if not ids or ids[-1] not in nr_req or len(old_fields) != len(new_fields):
        return False
    for old_f, new_f in zip(old_fields, new_fields, strict=True):
        if (old_f.number, old_f.wire_type) != (new_f.number, new_f.wire_type):
            return False
        if old_f.number == 2 and old_f.wire_type == protowire.VARINT:
            if new_f.value != nr_req[ids[-1]]:
                return False
        elif old[old_f.start : old_f.end] != new[new_f.start : new_f.end]:
            return False
    return True
