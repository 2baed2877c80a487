"""Regenerate tests/data/mm/: golden mm images from a real CRIU dump.

Run as root with a provisioned CRIU and pycriu (scripts/provision-criu.sh):

    python tests/data/make_mm_golden.py

It starts the test bed's holder (a root with two children, rings of 1, 2, 5 and
16 pages, some with pending events), dumps it with the real CRIU, and copies:

- ``<case>/mm-<pid>.img``: the mm images exactly as CRIU 4.x wrote them;
- ``<case>/pycriu.json``: what Debian's pycriu decodes from each of them;
- ``k-minus-2/mm-<pid>.img``: the same images with nr_req = k - 2 (another CRIU
  build's formula), written by pycriu's own encoder.

The images hold only addresses and sizes of the holder's mappings. The golden
tests (tests/unit/test_codec_golden.py) need no CRIU: they check byte identity
and our decoding against pycriu.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "e2e"))

from images_helpers import mm_images, pycriu_decode  # noqa: E402
from testbed.harness import Criu, PyCriu, RingSpec, n_for_pages, start_holder  # noqa: E402

from criu_aio_plugin.criu_locate import find_criu  # noqa: E402


def main() -> int:
    criu = Criu(find_criu(Path("/opt/criu-aio/criu-path").read_text().strip()))
    pycriu = PyCriu.locate()
    assert pycriu is not None, "run scripts/provision-criu.sh first"
    rings = [
        RingSpec(n_for_pages(1), 2),
        RingSpec(n_for_pages(2)),
        RingSpec(n_for_pages(5), 3),
        RingSpec(n_for_pages(16)),
    ]
    out = HERE / "mm"
    with tempfile.TemporaryDirectory() as tmp:
        holder = start_holder(Path(tmp) / "holder", rings, children=2)
        run = holder.dump(criu, Path(tmp) / "images")
        assert run.ok, run.describe()
        src = mm_images(Path(tmp) / "images")
        for case in ("criu-4.1.1", "k-minus-2"):
            dest = out / case
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for p in src:
                shutil.copyfile(p, dest / p.name)
        broken = out / "k-minus-2"
        for p in mm_images(broken):
            pycriu.set_nr_req(p, {a["id"]: (a["ring_len"] - 32) // 32 - 2 for a in pycriu.aios(p)})
        for case in ("criu-4.1.1", "k-minus-2"):
            decoded = pycriu_decode(pycriu, mm_images(out / case))
            doc = {Path(k).name: v for k, v in decoded.items()}
            (out / case / "pycriu.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
