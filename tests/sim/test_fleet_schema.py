"""docs/host-profile.schema.json describes what `criu-aio profile --json` prints.

Real output of the CLI (simulated kernels here, the live kernel under the
``live`` mark) must validate; the loader in fleet.profiles and the JSON Schema
must agree on a table of broken documents; the example in the docs is valid.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.fleet import profiles
from criu_aio_plugin.kernel.simulated import PRESETS

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "host-profile.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def profile_json(kernel: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", "profile", "--json", "--kernel", kernel],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_cli_output_validates(preset: str) -> None:
    doc = profile_json(f"sim:{preset}")
    VALIDATOR.validate(doc)
    profiles.validate(doc, preset)


@pytest.mark.live
def test_live_cli_output_validates() -> None:
    doc = profile_json("live")
    VALIDATOR.validate(doc)
    assert profiles.validate(doc, "live") == doc
    assert doc["kernel"] == "live"


def test_docs_example_validates() -> None:
    text = (DOCS / "host-profile-schema.md").read_text()
    match = re.search(r"```json\n(.*?)```", text, re.S)
    assert match is not None
    doc = json.loads(match.group(1))
    VALIDATOR.validate(doc)
    profiles.validate(doc, "docs example")


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()

# Broken documents: both the schema and the loader must refuse each one.
BROKEN = [
    ("schema", "criu-aio/check"),
    ("version", 2),
    ("version", "1"),
    ("version", True),
    ("host", _DELETE),
    ("host.kernel_release", _DELETE),
    ("host.kernel_release", 6),
    ("host.page_size", 0),
    ("host.possible_cpus", -2),
    ("ring_sizing", _DELETE),
    ("ring_sizing.doubling", 1),
    ("ring_sizing.doubling", _DELETE),
    ("ring_sizing.page_size", "4096"),
    ("ring_sizing.possible_cpus", 0),
    ("ring_sizing.floor_per_cpu", -1),
    ("smallest_ring.len", _DELETE),
    ("smallest_ring.pages", 1.5),
    ("aio", _DELETE),
    ("aio.max_nr", -1),
    ("aio.nr", None),
]


@pytest.mark.parametrize(("path", "value"), BROKEN, ids=[f"{p}={v!r}" for p, v in BROKEN])
def test_schema_and_loader_refuse_the_same_documents(path: str, value: Any) -> None:
    doc = copy.deepcopy(profile_json("sim:x86-16"))
    VALIDATOR.validate(doc)
    _set(path, value)(doc)
    assert not VALIDATOR.is_valid(doc)
    with pytest.raises(ClientError, match=re.escape(path.split(".")[0])):
        profiles.validate(doc, "broken.json")


def test_unknown_keys_are_ignored_by_both() -> None:
    doc = profile_json("sim:v3.10")
    doc["future_section"] = {"anything": [1, 2]}
    doc["host"]["numa_nodes"] = 2
    VALIDATOR.validate(doc)
    profiles.validate(doc, "newer-minor.json")


def test_uncalibrated_profile_is_refused_by_the_loader() -> None:
    doc = profile_json("sim:x86-2")
    doc["ring_sizing"]["calibrated"] = False
    VALIDATOR.validate(doc)  # a valid document...
    with pytest.raises(ClientError, match="calibrated is false"):
        profiles.validate(doc, "guess.json")  # ...that placement cannot use
