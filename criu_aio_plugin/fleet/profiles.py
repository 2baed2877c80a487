"""Host profiles as data: load and validate ``criu-aio profile --json`` documents.

A profile is what placement knows about a host it cannot reach: its page size,
possible CPUs, learned ring-sizing model, fs.aio-max-nr and fs.aio-nr at the
time of profiling (docs/host-profile-schema.md). Loading checks the document
identifier and version first (a newer major version is refused, not guessed
at), then the fields placement uses, then that the ring-sizing model agrees
with the smallest ring the host was seen to create (estimator.profile's
``arithmetic_from_profile``); every error names the file and the field. The
model becomes a kernel through ``estimator.profile.kernel_from_profile``: a
``SimulatedKernel``, the same class the estimator is tested against.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from criu_aio_plugin.errors import ClientError

SCHEMA = "criu-aio/host-profile"
VERSION = 1
MAX_PROFILE_BYTES = 1 << 20  # a profile is a few KiB; refuse to slurp anything huge

_HINT = "make it with `criu-aio profile --json > HOST.json` on that host"

# Fields every version-1 document has (estimator/profile.py writes them) and
# placement or the labels read: dotted path -> kind.
_REQUIRED: tuple[tuple[str, str], ...] = (
    ("host", "object"),
    ("host.kernel_release", "string"),
    ("host.page_size", "positive"),
    ("host.possible_cpus", "positive"),
    ("ring_sizing", "object"),
    ("ring_sizing.page_size", "positive"),
    ("ring_sizing.doubling", "boolean"),
    ("ring_sizing.possible_cpus", "positive"),
    ("ring_sizing.floor_per_cpu", "count"),
    ("smallest_ring", "object"),
    ("smallest_ring.len", "count"),
    ("smallest_ring.pages", "count"),
    ("aio", "object"),
    ("aio.max_nr", "count"),
    ("aio.nr", "count"),
)


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return value > 0 if kind == "positive" else value >= 0


_KIND_TEXT = {
    "object": "an object",
    "string": "a string",
    "boolean": "true or false",
    "positive": "a positive integer",
    "count": "a non-negative integer",
}


@dataclass(frozen=True)
class HostProfile:
    """One validated profile: a name to report it under, where it came from, the data."""

    name: str
    source: str
    document: Mapping[str, Any]

    @property
    def host(self) -> Mapping[str, Any]:
        host: Mapping[str, Any] = self.document["host"]
        return host


def _lookup(doc: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate(doc: Any, source: str) -> Mapping[str, Any]:
    """``doc`` as a profile mapping, or ClientError naming ``source`` and the field."""
    if not isinstance(doc, Mapping):
        raise ClientError(f"{source}: not a host profile (a JSON object expected)", hint=_HINT)
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise ClientError(
            f"{source}: not a host profile (schema is {schema!r}, expected {SCHEMA!r})",
            hint=_HINT,
        )
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ClientError(f"{source}: field version is {version!r}, not an integer", hint=_HINT)
    if version > VERSION:
        raise ClientError(
            f"{source}: host profile version {version} is newer than this criu-aio "
            f"understands ({VERSION})",
            hint="upgrade criu-aio here, or profile the host with the same version",
        )
    if version < 1:
        raise ClientError(f"{source}: host profile version {version} is not valid", hint=_HINT)
    for dotted, kind in _REQUIRED:
        found, value = _lookup(doc, dotted)
        if not found:
            raise ClientError(f"{source}: field {dotted} is missing", hint=_HINT)
        if not _kind_ok(value, kind):
            raise ClientError(
                f"{source}: field {dotted} is {value!r}, expected {_KIND_TEXT[kind]}", hint=_HINT
            )
    if not doc["ring_sizing"].get("calibrated", True):
        raise ClientError(
            f"{source}: ring_sizing.calibrated is false: no ring-sizing model fitted that "
            "host's answers, so its decisions cannot be predicted from here",
            hint="run `criu-aio check --images-dir DIR` on that host instead",
        )
    from criu_aio_plugin.estimator.profile import arithmetic_from_profile

    try:
        arith = arithmetic_from_profile(doc)
    except ClientError as err:
        raise ClientError(f"{source}: {err.message}", hint=err.hint or _HINT) from err
    if arith.page_size != doc["host"]["page_size"]:
        raise ClientError(
            f"{source}: ring_sizing.page_size {arith.page_size} differs from host.page_size "
            f"{doc['host']['page_size']}",
            hint=_HINT,
        )
    return doc


def _name_of(doc: Mapping[str, Any], path: str) -> str:
    hostname = doc["host"].get("hostname")
    if isinstance(hostname, str) and hostname:
        return hostname
    stem = os.path.basename(path)
    return stem[:-5] if stem.endswith(".json") else stem


def parse(text: str | bytes, source: str) -> HostProfile:
    """A profile from JSON text (``source`` names it in errors)."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ClientError(f"{source}: not valid JSON ({err})", hint=_HINT) from err
    valid = validate(doc, source)
    return HostProfile(_name_of(valid, source), source, valid)


def load(path: str | os.PathLike[str]) -> HostProfile:
    """Read and validate one profile file."""
    shown = os.fspath(path)
    try:
        with open(shown, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as err:
        raise ClientError(
            f"cannot read host profile {shown}: {err.strerror}", errno=err.errno
        ) from err
    if len(data) > MAX_PROFILE_BYTES:
        raise ClientError(f"{shown}: larger than {MAX_PROFILE_BYTES} bytes, not a host profile")
    return parse(data, shown)


def load_dir(directory: str | os.PathLike[str]) -> list[HostProfile]:
    """Every ``*.json`` profile in ``directory`` (sorted by file name); none is an error."""
    shown = os.fspath(directory)
    try:
        names = sorted(n for n in os.listdir(shown) if n.endswith(".json"))
    except OSError as err:
        raise ClientError(
            f"cannot list profile directory {shown}: {err.strerror}", errno=err.errno
        ) from err
    if not names:
        raise ClientError(f"{shown}: no *.json host profiles in it", hint=_HINT)
    return [load(os.path.join(shown, name)) for name in names]


def load_all(
    paths: Iterable[str | os.PathLike[str]] = (),
    directories: Iterable[str | os.PathLike[str]] = (),
) -> list[HostProfile]:
    """Profiles from files and directories, in that order, with unique names.

    Two profiles claiming the same host name keep it apart by their file name
    (``db1 (profiles/old/db1.json)``) so a report never shows one row for two.
    """
    profiles = [load(p) for p in paths]
    for directory in directories:
        profiles += load_dir(directory)
    if not profiles:
        raise ClientError(
            "no host profile given", hint="pass --profile HOST.json or --profiles-dir D"
        )
    return _unique(profiles)


def _unique(profiles: Sequence[HostProfile]) -> list[HostProfile]:
    counts: dict[str, int] = {}
    for p in profiles:
        counts[p.name] = counts.get(p.name, 0) + 1
    return [
        HostProfile(f"{p.name} ({p.source})", p.source, p.document) if counts[p.name] > 1 else p
        for p in profiles
    ]
