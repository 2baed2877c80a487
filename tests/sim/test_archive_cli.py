"""inspect, check, can-restore and fix take an archive where they take a directory.

A corpus of synthetic checkpoints (rings of many sizes, CRIU's nr_req and
another build's) packed every way the engines pack them, judged on simulated
hosts: every command must give the archive exactly the answer it gives the
extracted directory (paths aside), and the documents must validate against
docs/verdict.schema.json.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from testbed import archives

from criu_aio_plugin.images import synthetic
from criu_aio_plugin.images.synthetic import SynthRing

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "verdict.schema.json").read_text())
HOSTS = ("x86-1", "x86-2", "x86-16", "x86-64", "x86-88", "x86-4096", "v3.10", "arm64-64k")
FORMS = ("kubelet", "podman-zstd", "podman-gzip", "gnu-gzip", "images-tar")


def cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def cli_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(*args)
    assert code not in (1, 2), err
    doc: dict[str, Any] = json.loads(out)
    return code, doc


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}
    )


def _checkpoint(d: Path, groups: dict[int, list[int]], forged: set[int]) -> Path:
    archives.synthetic_images(d, {})
    for pid, pages in groups.items():
        rings = synthetic.rings_for(pages)
        if pid in forged:
            rings = [SynthRing(r.ring_id, r.ring_len, (r.ring_len - 32) // 32 - 2) for r in rings]
        (d / f"mm-{pid}.img").write_bytes(synthetic.mm_image_bytes(rings, 30, pid))
    (d / "pstree.img").write_bytes(archives._pstree_image(sorted(groups)))
    return d


CORPUS = {
    "fine": ({10: [1, 2], 11: [3]}, set()),
    "forged": ({20: [1, 2, 5], 21: [2]}, {20}),
    "large": ({30: [16, 17, 64], 31: [1], 32: [4, 4]}, {31}),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Path]]]:
    """name -> (images directory, {form: archive})."""
    out = {}
    for name, (groups, forged) in CORPUS.items():
        work = tmp_path_factory.mktemp(name)
        images = _checkpoint(work / "images", groups, forged)
        forms = {
            "kubelet": archives.kubelet_archive(images, work / "k"),
            "podman-zstd": archives.podman_archive(images, work / "pz", "zstd"),
            "podman-gzip": archives.podman_archive(images, work / "pg", "gzip"),
            "gnu-gzip": archives.podman_archive(
                images, work / "gg", "gzip", name="gnu.tar.gz", tool="gnu-tar"
            ),
            "images-tar": archives.tar_folder(images, work / "images.tar"),
        }
        out[name] = (images, forms)
    return out


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("profiles")
    for host in HOSTS:
        code, out, err = cli("profile", "--json", "--kernel", f"sim:{host}")
        assert code == 0, err
        (d / f"{host}.json").write_text(out)
    return d


def _sans_paths(doc: Any) -> Any:
    """The document without what names the checkpoint's location (and probe counts)."""
    doc = copy.deepcopy(doc)

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {
                k: strip(v)
                for k, v in obj.items()
                if k not in ("checkpoint", "archive", "container", "probes", "profile")
            }
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(doc)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_can_restore_gives_an_archive_its_directory_answers(
    corpus: dict[str, tuple[Path, dict[str, Path]]], profiles: Path, name: str
) -> None:
    images, forms = corpus[name]
    code, expected = cli_json("can-restore", str(images), "--profiles-dir", str(profiles), "--json")
    per_host = {h["host"]: (h["status"], h["exit_code"]) for h in expected["hosts"]}
    assert len(per_host) == len(HOSTS)
    for form, path in forms.items():
        got_code, got = cli_json(
            "can-restore", str(path), "--profiles-dir", str(profiles), "--json"
        )
        _validator("can_restore_document").validate(got)
        assert got_code == code, form
        assert {h["host"]: (h["status"], h["exit_code"]) for h in got["hosts"]} == per_host, form
        assert _sans_paths(got) == _sans_paths(expected), form
        assert got["archive"]["path"] == str(path)
        if form != "images-tar":
            assert got["archive"]["container"]["name"] == "aio-holder"


@pytest.mark.parametrize(
    "kernel", ["sim:x86-2", "sim:x86-64", "sim:v3.10", "sim:cpus=2,aio_max_nr=100"]
)
def test_inspect_check_and_fix_dry_run_agree_with_the_directory(
    corpus: dict[str, tuple[Path, dict[str, Path]]], kernel: str
) -> None:
    for images, forms in corpus.values():
        code, expected = cli_json("inspect", str(images), "--json", "--kernel", kernel)
        check_code, _ = cli_json(
            "check", "--aio-only", "-D", str(images), "--json", "--kernel", kernel
        )
        fix_code, fixed_dir = cli_json(
            "fix", str(images), "--dry-run", "--json", "--kernel", kernel
        )
        for form, path in forms.items():
            got_code, got = cli_json("inspect", str(path), "--json", "--kernel", kernel)
            _validator("verdict").validate(got)
            assert (got_code, _sans_paths(got)) == (code, _sans_paths(expected)), form
            assert got["archive"]["compression"] in ("none", "gzip", "zstd")
            assert all("container" in ring for ring in got["rings"])
            c_code, checked = cli_json(
                "check", "--aio-only", "-D", str(path), "--json", "--kernel", kernel
            )
            _validator("check_document").validate(checked)
            assert c_code == check_code, form
            f_code, fixed = cli_json("fix", str(path), "--dry-run", "--json", "--kernel", kernel)
            _validator("fix_document").validate(fixed)
            assert f_code == fix_code, form
            assert fixed["fix"]["changes"] == fixed_dir["fix"]["changes"], form
            assert fixed["fix"]["written"] is False


def test_k8s_affinity_is_the_same(corpus: dict[str, tuple[Path, dict[str, Path]]]) -> None:
    images, forms = corpus["large"]
    code, expected, err = cli("inspect", str(images), "--k8s-affinity")
    assert code == 0, err
    for path in forms.values():
        assert cli("inspect", str(path), "--k8s-affinity")[1] == expected


def test_inspect_names_the_container_beside_every_ring(
    corpus: dict[str, tuple[Path, dict[str, Path]]],
) -> None:
    _, forms = corpus["forged"]
    code, out, err = cli("inspect", str(forms["kubelet"]), "--kernel", "sim:x86-2")
    assert code == 3, err
    lines = out.splitlines()
    assert lines[0].startswith(f"archive {forms['kubelet']} (none): aio-holder (")
    assert "pod shop/web-7d9f" in lines[0]
    assert lines[1].split()[0] == "CONTAINER"
    ring_rows = [line for line in lines[2:] if line.startswith("aio-holder ")]
    assert len(ring_rows) == 4


def test_fix_on_a_simulated_kernel_writes_nothing(
    corpus: dict[str, tuple[Path, dict[str, Path]]], tmp_path: Path
) -> None:
    _, forms = corpus["forged"]
    path = forms["podman-zstd"]
    before = path.read_bytes()
    out = tmp_path / "new.tar.gz"
    code, doc = cli_json("fix", str(path), "--output", str(out), "--json", "--kernel", "sim:x86-2")
    assert code == 3 and doc["fix"]["written"] is False
    assert not out.exists()
    assert path.read_bytes() == before


def test_output_is_for_archives_only(corpus: dict[str, tuple[Path, dict[str, Path]]]) -> None:
    images, forms = corpus["fine"]
    code, _, err = cli("fix", str(images), "--output", "/tmp/x.tar")
    assert code == 2 and "--output is for checkpoint archives" in err
    code, _, err = cli("fix", str(forms["kubelet"]), "--revert", "--output", "/tmp/x.tar")
    assert code == 2


def test_a_hostile_archive_is_an_error_for_every_command(tmp_path: Path) -> None:
    images = archives.synthetic_images(tmp_path / "images", {1: [1]})
    hostile = archives.hostile_archives(images, tmp_path / "h")
    h = hostile["traversal"]
    for args in (
        ("inspect", str(h.path)),
        ("check", "--aio-only", "-D", str(h.path)),
        ("fix", str(h.path)),
        ("fix", str(h.path), "--revert"),
    ):
        code, _, err = cli(*args)
        assert code == 1, args
        assert "climbs out of the archive" in err and str(h.path) in err, err
