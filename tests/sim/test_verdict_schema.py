"""docs/verdict.schema.json describes what inspect, check, fix and can-restore print.

Real output of the CLI on synthetic checkpoints against simulated kernels (the
live one under the ``live`` mark) must validate, every status must occur in the
corpus, and the commands that show a checkpoint's verdict show the same one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from criu_aio_plugin.images import synthetic
from criu_aio_plugin.images.synthetic import SynthRing

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "verdict.schema.json").read_text())


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}
    )


def cli(*args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode not in (1, 2), done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, doc


KERNELS = [
    "sim:x86-2",
    "sim:x86-16",
    "sim:x86-64",
    "sim:v3.10",
    "sim:arm64-64k",
    "sim:cpus=2,aio_max_nr=300",
    "sim:cpus=2,aio_max_nr=100",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    rings = synthetic.rings_for([1, 2, 5])
    wrong = [SynthRing(r.ring_id, r.ring_len, (r.ring_len - 32) // 32 - 2) for r in rings]
    (d / "mm-10.img").write_bytes(synthetic.mm_image_bytes(rings, 20, 10))
    (d / "mm-11.img").write_bytes(synthetic.mm_image_bytes(wrong, 20, 11))
    return d


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_command_prints_valid_documents(checkpoint: Path, kernel: str) -> None:
    code, inspected = cli("inspect", str(checkpoint), "--json", "--kernel", kernel)
    _validator("verdict").validate(inspected)
    check_code, checked = cli(
        "check", "--aio-only", "--json", "-D", str(checkpoint), "--kernel", kernel
    )
    _validator("check_document").validate(checked)
    fix_code, fixed = cli("fix", str(checkpoint), "--dry-run", "--json", "--kernel", kernel)
    _validator("fix_document").validate(fixed)
    # One verdict, whichever command shows it (probes aside: caches differ).
    same = {k: v for k, v in inspected.items() if k != "probes"}
    assert {k: v for k, v in checked["checkpoint"].items() if k != "probes"} == same
    assert {k: v for k, v in fixed.items() if k not in ("probes", "fix")} == same
    assert code == check_code == checked["exit_code"] == fix_code


def test_the_corpus_covers_every_status(checkpoint: Path) -> None:
    seen = {cli("inspect", str(checkpoint), "--json", "--kernel", k)[1]["status"] for k in KERNELS}
    assert seen == {"rewrite", "budget", "impossible"}  # fine: the test below
    ring_statuses = {
        r["status"]
        for k in KERNELS
        for r in cli("inspect", str(checkpoint), "--json", "--kernel", k)[1]["rings"]
    }
    assert ring_statuses >= {"fine", "rewrite", "impossible"}


def test_fine_and_aio_check_documents(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    (d / "mm-5.img").write_bytes(synthetic.mm_image_bytes(synthetic.rings_for([1, 3]), 20, 5))
    code, doc = cli("inspect", str(d), "--json", "--kernel", "sim:x86-2")
    assert code == 0 and doc["status"] == "fine" and doc["decision"] == "fine"
    _validator("verdict").validate(doc)
    for kernel in ("sim:x86-2", "sim:v3.10", "sim:cpus=64"):
        _, checked = cli("check", "--aio-only", "--json", "--max-pages", "8", "--kernel", kernel)
        _validator("check_document").validate(checked)


def test_can_restore_document(checkpoint: Path, tmp_path: Path) -> None:
    for name in ("x86-2", "x86-64", "v3.10"):
        _, profile = cli("profile", "--json", "--kernel", f"sim:{name}")
        (tmp_path / f"{name}.json").write_text(json.dumps(profile))
    code, doc = cli("can-restore", str(checkpoint), "--profiles-dir", str(tmp_path), "--json")
    _validator("can_restore_document").validate(doc)
    assert code == doc["exit_code"] == 4
    by_host = {Path(h["profile"]).stem: h["status"] for h in doc["hosts"]}
    assert by_host == {"x86-2": "rewrite", "x86-64": "impossible", "v3.10": "rewrite"}


def test_a_broken_document_is_refused(checkpoint: Path) -> None:
    _, doc = cli("inspect", str(checkpoint), "--json", "--kernel", "sim:x86-64")
    bad = json.loads(json.dumps(doc))
    bad["rings"][0]["ring"] = 139637976727552  # the old check --images-dir spelling
    with pytest.raises(jsonschema.ValidationError):
        _validator("verdict").validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["decision"] = "fine"  # an impossible checkpoint is never "fine"
    with pytest.raises(jsonschema.ValidationError):
        _validator("verdict").validate(bad)


@pytest.mark.live
def test_live_fix_document(checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "w"
    shutil.copytree(checkpoint, work)
    code, doc = cli("fix", str(work), "--json")
    _validator("fix_document").validate(doc)
    assert code == 0 and doc["fix"]["written"] and doc["kernel"]["live"]
