"""Compile protos/*.proto into this folder (build time, and for the freshness test).

Kept free of criu_aio_plugin imports: setup.py loads it before the package exists.
"""

from __future__ import annotations

from pathlib import Path


def compile_protos(src: Path, out: Path) -> list[Path]:
    """Run grpcio-tools' protoc on every .proto in *src*; return the files written."""
    import importlib.resources

    from grpc_tools import protoc  # type: ignore[import-untyped]

    protos = sorted(src.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files in {src}")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{src}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        *[str(p) for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on {', '.join(p.name for p in protos)}")
    written: list[Path] = []
    for p in protos:
        written.append(out / f"{p.stem}_pb2.py")
        written.append(out / f"{p.stem}_pb2.pyi")
    return written
