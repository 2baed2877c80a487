"""Build hook: compile protos/*.proto into criu_aio_plugin/_proto with grpcio-tools.

Runs for `pip install .` (build_py) and for `pip install -e .` (setuptools runs
build_py in editable mode too), so a clean clone always gets importable generated
modules. Generated files are never committed; tests/unit/test_protos.py checks that
the installed ones match protos/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "criu_aio_plugin" / "_proto"))
from _compile import compile_protos  # noqa: E402

sys.path.pop(0)


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        compile_protos(ROOT / "protos", ROOT / "criu_aio_plugin" / "_proto")
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
