"""The installed generated protobuf modules are exactly what protos/ compiles to.

setup.py compiles protos/*.proto at build time (pip install . / -e .); nothing
generated is committed or edited by hand. Recompiling into a temporary folder
with the same helper must give byte-identical files; a stale install (protos/
changed since, or another grpcio-tools) fails here with the remedy.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import criu_aio_plugin._proto as proto_pkg
from criu_aio_plugin._proto._compile import compile_protos

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
INSTALLED = Path(proto_pkg.__file__).parent
REMEDY = "reinstall: pip install -e '.[test]' (scripts/setup.sh does it)"


def test_every_proto_has_installed_modules() -> None:
    stems = sorted(p.stem for p in PROTOS.glob("*.proto"))
    assert stems, f"no .proto files in {PROTOS}"
    for stem in stems:
        for suffix in ("_pb2.py", "_pb2.pyi"):
            assert (INSTALLED / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing: {REMEDY}"


def test_installed_modules_match_protos(tmp_path: Path) -> None:
    written = compile_protos(PROTOS, tmp_path)
    assert written
    for fresh in written:
        installed = INSTALLED / fresh.name
        assert installed.read_bytes() == fresh.read_bytes(), (
            f"{installed} differs from what {PROTOS} compiles to: {REMEDY}"
        )


@pytest.mark.parametrize(
    ("module", "message", "fields"),
    [
        # DESIGN.md section 1: aio_ring_entry {id = 1; nr_req = 2; ring_len = 3}
        ("criu_aio_mm_pb2", "aio_ring_entry", {"id": 1, "nr_req": 2, "ring_len": 3}),
        # mm_entry field 16 `aios`, vmas 14
        ("criu_aio_mm_pb2", "mm_entry", {"vmas": 14, "aios": 16}),
        ("criu_aio_rpc_pb2", "criu_req", {"type": 1, "opts": 2}),
        ("criu_aio_rpc_pb2", "criu_resp", {"type": 1, "success": 2}),
    ],
)
def test_documented_field_numbers(module: str, message: str, fields: dict[str, int]) -> None:
    mod = importlib.import_module(f"criu_aio_plugin._proto.{module}")
    desc = mod.DESCRIPTOR.message_types_by_name[message]
    assert {name: desc.fields_by_name[name].number for name in fields} == fields


def test_rpc_request_type_numbers() -> None:
    # DESIGN.md section 3: DUMP 1, RESTORE 2, CHECK 3, PRE_DUMP 4, PAGE_SERVER 5,
    # NOTIFY 6, FEATURE_CHECK 9, VERSION 10.
    mod = importlib.import_module("criu_aio_plugin._proto.criu_aio_rpc_pb2")
    enum = mod.DESCRIPTOR.enum_types_by_name["criu_req_type"]
    numbers = {v.name: v.number for v in enum.values}
    expected = {
        "DUMP": 1,
        "RESTORE": 2,
        "CHECK": 3,
        "PRE_DUMP": 4,
        "PAGE_SERVER": 5,
        "NOTIFY": 6,
        "FEATURE_CHECK": 9,
        "VERSION": 10,
    }
    assert {k: numbers[k] for k in expected} == expected


def test_declared_protobuf_floor_admits_no_runtime_the_generated_code_refuses() -> None:
    """protoc stamps the generated modules with the oldest runtime they accept;
    pyproject's `protobuf>=` floor must not be older, or pip could keep a
    runtime the import then rejects."""
    import re
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("protobuf")]
    floor = re.search(r">=\s*([0-9]+)\.([0-9]+)\.([0-9]+)", spec)
    assert floor, f"pyproject's protobuf dependency has no >= X.Y.Z floor: {spec!r}"
    declared = tuple(int(x) for x in floor.groups())
    for gen in sorted(INSTALLED.glob("*_pb2.py")):
        stamp = re.search(
            r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
            r"([0-9]+),\s*([0-9]+),\s*([0-9]+),",
            gen.read_text(),
        )
        if stamp is None:  # older protoc: no stamp, nothing to compare
            continue
        needed = tuple(int(x) for x in stamp.groups())
        assert declared >= needed, (
            f"{gen.name} needs protobuf >= {'.'.join(map(str, needed))} but pyproject "
            f"declares {spec!r}: move the grpcio-tools and protobuf pins together"
        )
