"""Read or edit an mm image's AIO rings with Debian's pycriu: an independent tool.

Runs in pycriu's own environment, never criu-aio's: pycriu's pb2dict needs a
protobuf runtime older than 7 (it reads FieldDescriptor.label), so the harness
starts this file as `python3 -S pycriu_tool.py ...` with PYTHONPATH set to the
folder scripts/provision-criu.sh recorded in /opt/criu-aio/pycriu-path (Debian
13's python3-pycriu and python3-protobuf). Only the standard library and pycriu
are imported here.

usage:
  pycriu_tool.py aios MM_IMG                 print the mm entry's aios as JSON
  pycriu_tool.py set-nr-req MM_IMG ID=NR...  set nr_req of the rings with these ids
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

import pycriu.images  # type: ignore[import-not-found]


def _load(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        img: dict[str, Any] = pycriu.images.load(f)
    if img.get("magic") != "MM":
        raise SystemExit(f"{path}: not an mm image (magic {img.get('magic')!r})")
    return img


def aios(path: str) -> list[dict[str, int]]:
    entry = _load(path)["entries"][0]
    return [
        {"id": int(a["id"]), "nr_req": int(a["nr_req"]), "ring_len": int(a["ring_len"])}
        for a in entry.get("aios", [])
    ]


def set_nr_req(path: str, changes: dict[int, int]) -> None:
    img = _load(path)
    rings = img["entries"][0].get("aios", [])
    seen = set()
    for ring in rings:
        if int(ring["id"]) in changes:
            ring["nr_req"] = changes[int(ring["id"])]
            seen.add(int(ring["id"]))
    missing = sorted(set(changes) - seen)
    if missing:
        raise SystemExit(f"{path}: no ring with id {', '.join(hex(m) for m in missing)}")
    buf = io.BytesIO()
    pycriu.images.dump(img, buf)
    tmp = f"{path}.pycriu-tool.tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "aios":
        print(json.dumps(aios(argv[1])))
        return 0
    if len(argv) >= 3 and argv[0] == "set-nr-req":
        changes = {}
        for item in argv[2:]:
            ring_id, nr = item.split("=", 1)
            changes[int(ring_id, 0)] = int(nr, 0)
        set_nr_req(argv[1], changes)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
