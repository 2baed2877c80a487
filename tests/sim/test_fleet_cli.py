"""The fleet commands as a user runs them, on synthetic mm images (images codec).

`can-restore` from a profile must give the code `check --images-dir` gives on
that kernel; `check --profile` must give what `check --kernel` gives; the
images are never modified; errors name the file and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.fleet import k8s
from criu_aio_plugin.images import synthetic
from criu_aio_plugin.kernel.arithmetic import criu_formula

HOSTS = ("x86-1", "x86-2", "x86-16", "x86-64", "x86-88", "x86-4096", "v3.10", "arm64-64k")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def write_images(directory: Path, per_pid: dict[int, list[synthetic.SynthRing]]) -> Path:
    directory.mkdir()
    for pid, rings in per_pid.items():
        (directory / f"mm-{pid}.img").write_bytes(synthetic.mm_image_bytes(rings, seed=pid))
    return directory


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("profiles")
    for host in HOSTS:
        done = cli("profile", "--json", "--kernel", f"sim:{host}")
        assert done.returncode == 0, done.stderr
        (d / f"{host}.json").write_text(done.stdout)
    return d


CHECKPOINTS = {
    "small": {10: synthetic.rings_for([1, 2]), 11: synthetic.rings_for([4])},
    "criu-1156": {20: synthetic.rings_for([3, 3])},
    "big": {30: synthetic.rings_for([16, 32])},
    "edited": {
        40: [synthetic.SynthRing(0x7F00_0000_0000, 8192, 200)],  # DESIGN section 1's nr_req
    },
    "64k": {50: [synthetic.SynthRing(0x7F00_0000_0000, 65536 * 2, criu_formula(65536 * 2))]},
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_can_restore_equals_each_hosts_check(name: str, profile_dir: Path, tmp_path: Path) -> None:
    images = write_images(tmp_path / name, CHECKPOINTS[name])
    before = digest(images)
    done = cli("can-restore", str(images), "--profiles-dir", str(profile_dir), "--json")
    doc: dict[str, Any] = json.loads(done.stdout)
    by_profile = {Path(h["profile"]).stem: h for h in doc["hosts"]}
    assert sorted(by_profile) == sorted(HOSTS)
    for host in HOSTS:
        own = cli("check", "--aio-only", "--images-dir", str(images), "--kernel", f"sim:{host}")
        via = cli(
            "check", "--images-dir", str(images), "--profile", str(profile_dir / f"{host}.json")
        )
        assert by_profile[host]["exit_code"] == own.returncode == via.returncode, host
    worst = max(
        (h["exit_code"] for h in doc["hosts"]),
        key=[exitcodes.OK, exitcodes.FIXABLE, exitcodes.BUDGET, exitcodes.IMPOSSIBLE].index,
    )
    assert done.returncode == worst
    assert digest(images) == before  # read only


@pytest.mark.parametrize("host", HOSTS)
def test_check_profile_equals_check_kernel(host: str, profile_dir: Path) -> None:
    own = cli("check", "--aio-only", "--json", "--kernel", f"sim:{host}")
    via = cli("check", "--json", "--profile", str(profile_dir / f"{host}.json"))
    assert own.returncode == via.returncode
    own_doc, via_doc = json.loads(own.stdout), json.loads(via.stdout)
    assert "criu" not in via_doc  # --profile implies --aio-only: CRIU's check is about here
    strip = ("kernel", "kernel_name", "summary")
    assert {k: v for k, v in own_doc["aio"].items() if k not in strip} == {
        k: v for k, v in via_doc["aio"].items() if k not in strip
    }


@pytest.mark.live
def test_live_profile_equals_live_check(tmp_path: Path) -> None:
    here = tmp_path / "here.json"
    done = cli("profile", "--json")
    assert done.returncode == 0, done.stderr
    here.write_text(done.stdout)
    for name, per_pid in CHECKPOINTS.items():
        images = write_images(tmp_path / name, per_pid)
        own = cli("check", "--aio-only", "--images-dir", str(images))
        verdict = cli("can-restore", str(images), "--profile", str(here))
        assert verdict.returncode == own.returncode, (name, verdict.stdout, own.stdout)


def test_any_host(profile_dir: Path, tmp_path: Path) -> None:
    images = write_images(tmp_path / "c", CHECKPOINTS["criu-1156"])
    worst = cli("can-restore", str(images), "--profiles-dir", str(profile_dir))
    best = cli("can-restore", str(images), "--profiles-dir", str(profile_dir), "--any")
    assert worst.returncode == exitcodes.IMPOSSIBLE
    assert best.returncode == exitcodes.OK
    assert "not at all" in worst.stdout and "CRIU alone" in worst.stdout
    assert "fewer possible CPUs" in worst.stdout
    only_big = cli(
        "can-restore", str(images), "--profile", str(profile_dir / "x86-88.json"), "--any"
    )
    assert only_big.returncode == exitcodes.IMPOSSIBLE


def test_budget_verdict_from_a_busy_host(tmp_path: Path) -> None:
    images = write_images(tmp_path / "c", CHECKPOINTS["big"])
    busy = cli("profile", "--json", "--kernel", "sim:cpus=2,aio_max_nr=65536,aio_nr=65000")
    assert busy.returncode == 0, busy.stderr
    (tmp_path / "busy.json").write_text(busy.stdout)
    done = cli("can-restore", str(images), "--profile", str(tmp_path / "busy.json"), "--json")
    assert done.returncode == exitcodes.BUDGET
    (host,) = json.loads(done.stdout)["hosts"]
    verdict = host["verdict"]
    assert host["status"] == verdict["status"] == "budget"
    assert verdict["budget"]["headroom"] == 536
    # Each ring alone is over the 536 left: the fewest events that build them.
    fewest = k8s.min_nr_req_doubling(16, 4096) + k8s.min_nr_req_doubling(32, 4096)
    assert verdict["budget"]["needed"] == fewest
    assert all("fs.aio-max-nr" in r for r in verdict["problems"])


def test_errors_and_usage(profile_dir: Path, tmp_path: Path) -> None:
    images = write_images(tmp_path / "c", CHECKPOINTS["small"])
    usage = cli("can-restore", str(images))
    assert usage.returncode == exitcodes.USAGE and "--profile" in usage.stderr
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "criu-aio/host-profile"}))
    bad = cli("can-restore", str(images), "--profile", str(tmp_path / "bad.json"))
    assert bad.returncode == exitcodes.ERROR
    assert "bad.json" in bad.stderr and "version" in bad.stderr
    missing = cli("can-restore", str(tmp_path / "nope"), "--profiles-dir", str(profile_dir))
    assert missing.returncode == exitcodes.ERROR and "nope" in missing.stderr
    both = cli("check", "--images-dir", str(images), "--profile", "x.json", "--kernel", "live")
    assert both.returncode == exitcodes.USAGE
    helptext = cli("can-restore", "--help").stdout
    for code in (exitcodes.OK, exitcodes.FIXABLE, exitcodes.IMPOSSIBLE, exitcodes.BUDGET):
        assert f"  {code}  " in helptext


def test_no_rings_no_constraint(profile_dir: Path, tmp_path: Path) -> None:
    images = write_images(tmp_path / "c", {60: []})
    done = cli("can-restore", str(images), "--profiles-dir", str(profile_dir))
    assert done.returncode == exitcodes.OK
    affinity = cli("inspect", str(images), "--k8s-affinity")
    assert affinity.returncode == exitcodes.OK and json.loads(affinity.stdout) == {}
