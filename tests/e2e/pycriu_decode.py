"""Decode mm images with Debian's pycriu and print them as JSON: an independent reader.

Runs in pycriu's own environment (``python3 -S`` with PYTHONPATH set to the
provisioned pycriu folder, see tests/testbed/harness.py PyCriu), never in
criu-aio's: only the standard library and pycriu are imported.

usage: pycriu_decode.py MM_IMG...   -> {path: {"magic": ..., "entries": [...]}}
"""

from __future__ import annotations

import json
import sys

import pycriu.images  # type: ignore[import-not-found]


def main(paths: list[str]) -> int:
    out = {}
    for path in paths:
        with open(path, "rb") as f:
            out[path] = pycriu.images.load(f)
    json.dump(out, sys.stdout, default=str, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
