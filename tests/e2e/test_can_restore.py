"""can-restore, check --profile and the k8s affinity on real checkpoints.

Checkpoints are real: holder processes with real AIO rings dumped by the real
CRIU (tests/conftest.py). The answers are compared with what each host itself
decides (``criu-aio check --images-dir`` on that kernel: live here, simulated
for hosts this machine cannot be) and, for this machine, with what the real
CRIU then does on restore.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testbed.harness import Checkpoint, Criu, PyCriu, RingSpec, n_for_pages

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.fleet import k8s

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

# Hosts this machine cannot be, as `--kernel` specs of the simulated kernels.
SIM_HOSTS = ("x86-1", "x86-2", "x86-16", "x86-64", "x86-88", "x86-4096", "v3.10", "arm64-64k")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "criu_aio_plugin", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def profile(path: Path, kernel: str = "live") -> Path:
    done = cli("profile", "--json", "--kernel", kernel)
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)
    return path


def can_restore(images: Path, *profiles: Path) -> tuple[int, dict[str, Any]]:
    args = [a for p in profiles for a in ("--profile", str(p))]
    done = cli("can-restore", str(images), *args, "--json")
    assert done.returncode != exitcodes.ERROR, done.stderr
    return done.returncode, json.loads(done.stdout)


def check_code(images: Path, *how: str) -> int:
    done = cli("check", "--aio-only", "--images-dir", str(images), *how)
    assert done.returncode not in (exitcodes.ERROR, exitcodes.USAGE), done.stderr
    return done.returncode


def test_live_profile_says_criu_alone_and_criu_alone_restores(
    checkpoint: Any, tmp_path: Path, restore_and_verify: Any
) -> None:
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(1)), RingSpec(n_for_pages(3), 2), 500])
    here = profile(tmp_path / "here.json")
    code, doc = can_restore(cp.images_dir, here)
    (host,) = doc["hosts"]
    assert host["status"] == "fine" and code == exitcodes.OK
    assert host["verdict"]["budget"]["needed"] == sum(r["stored_nr_req"] for r in doc["rings"])
    # The host's own answer, on the live kernel and from its profile.
    assert check_code(cp.images_dir) == code
    assert check_code(cp.images_dir, "--profile", str(here)) == code
    # And the real CRIU agrees: plain `criu restore` brings every ring back.
    restore_and_verify(cp)


def test_forged_nr_req_needs_criu_aio_and_criu_aio_makes_it_restore(
    checkpoint: Any, pycriu: PyCriu, criu: Criu, tmp_path: Path, restore_and_verify: Any
) -> None:
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(2), 1), RingSpec(n_for_pages(4))])
    mm = cp.mm_image()
    # Another CRIU build's nr_req (k - 2), written with Debian's pycriu.
    pycriu.set_nr_req(mm, {a["id"]: (a["ring_len"] - 32) // 32 - 2 for a in pycriu.aios(mm)})
    here = profile(tmp_path / "here.json")
    code, doc = can_restore(cp.images_dir, here)
    assert doc["hosts"][0]["status"] == "rewrite" and code == exitcodes.FIXABLE
    assert check_code(cp.images_dir) == code
    assert check_code(cp.images_dir, "--profile", str(here)) == code
    # "with criu-aio" holds: fix on this host, then plain CRIU restores it.
    fixed = cli("fix", str(cp.images_dir))
    assert fixed.returncode == exitcodes.OK, fixed.stderr
    assert can_restore(cp.images_dir, here)[1]["hosts"][0]["status"] == "fine"
    restore_and_verify(cp)


def test_every_simulated_host_agrees_with_its_own_check(checkpoint: Any, tmp_path: Path) -> None:
    # 1, 3 and 6 pages: the 3-page ring is criu#1156's (nothing from 48 CPUs up).
    cp: Checkpoint = checkpoint([n_for_pages(1), n_for_pages(3), n_for_pages(6)])
    profiles = [profile(tmp_path / f"{spec}.json", f"sim:{spec}") for spec in SIM_HOSTS]
    code, doc = can_restore(cp.images_dir, *profiles)
    verdicts = dict(zip(SIM_HOSTS, (h["status"] for h in doc["hosts"]), strict=True))
    assert verdicts["x86-2"] == "fine"
    assert verdicts["v3.10"] == "rewrite"
    assert verdicts["x86-64"] == verdicts["arm64-64k"] == "impossible"
    assert code == exitcodes.IMPOSSIBLE
    for spec, path in zip(SIM_HOSTS, profiles, strict=True):
        own = check_code(cp.images_dir, "--kernel", f"sim:{spec}")
        single, _ = can_restore(cp.images_dir, path)
        assert single == own == check_code(cp.images_dir, "--profile", str(path)), spec

    # The affinity `inspect --k8s-affinity` prints admits exactly the hosts whose
    # `profile --nfd` labels belong to a host that can restore it.
    done = cli("inspect", str(cp.images_dir), "--k8s-affinity")
    assert done.returncode == exitcodes.OK, done.stderr
    from kubernetes.client import ApiClient, V1NodeAffinity

    client = ApiClient()
    model = client.deserialize(done.stdout, "V1NodeAffinity", "application/json")
    assert isinstance(model, V1NodeAffinity)
    affinity = client.sanitize_for_serialization(model)
    admitted = set()
    for spec in SIM_HOSTS:
        nfd = cli("profile", "--nfd", "--kernel", f"sim:{spec}")
        assert nfd.returncode == 0, nfd.stderr
        labels = dict(
            line.split("=", 1) for line in nfd.stdout.splitlines() if not line.startswith("#")
        )
        if k8s.affinity_admits(affinity, labels):
            admitted.add(spec)
    assert admitted == {s for s, v in verdicts.items() if v in ("fine", "rewrite")}


def test_live_nfd_labels_admit_this_machine_for_what_it_can_restore(
    checkpoint: Any, tmp_path: Path
) -> None:
    cp: Checkpoint = checkpoint([n_for_pages(2)])
    nfd = cli("profile", "--nfd")
    assert nfd.returncode == 0, nfd.stderr
    labels = dict(
        line.split("=", 1) for line in nfd.stdout.splitlines() if not line.startswith("#")
    )
    affinity = json.loads(cli("inspect", str(cp.images_dir), "--k8s-affinity").stdout)
    code, doc = can_restore(cp.images_dir, profile(tmp_path / "here.json"))
    assert k8s.affinity_admits(affinity, labels) == doc["hosts"][0]["restorable"]
    assert code == exitcodes.OK  # a ring dumped here by CRIU comes back here by CRIU
