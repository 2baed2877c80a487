"""`criu-aio inspect` and `criu-aio fix` against simulated kernels (and the live one).

Verdicts come from the estimator on the kernel named by --kernel; these tests
check what the commands make of them: table and JSON, exit codes, and that a
simulated kernel never leads to a write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.main import main
from criu_aio_plugin.decision.checkpoint import Session
from criu_aio_plugin.decision.decide import FIX, REPORT
from criu_aio_plugin.images import journal, synthetic
from criu_aio_plugin.images.synthetic import SynthRing
from criu_aio_plugin.kernel.select import kernel_from_spec


def _ckpt(d: Path, *, wrong: bool) -> dict[str, bytes]:
    d.mkdir()
    out = {}
    for pid, pages in ((10, [1, 2, 4]), (11, [2, 8])):
        rings = synthetic.rings_for(pages)
        if wrong:  # nr_req = k - 2, as another CRIU build writes it
            rings = [SynthRing(r.ring_id, r.ring_len, (r.ring_len - 32) // 32 - 2) for r in rings]
        data = synthetic.mm_image_bytes(rings, 40, pid)
        (d / f"mm-{pid}.img").write_bytes(data)
        out[f"mm-{pid}.img"] = data
    return out


def _unchanged(d: Path, images: dict[str, bytes]) -> bool:
    return {n: (d / n).read_bytes() for n in images} == images and not (
        d / journal.JOURNAL_NAME
    ).exists()


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


@pytest.mark.parametrize(
    ("spec", "wrong", "code", "verdicts"),
    [
        ("sim:x86-2", False, exitcodes.OK, {"fine"}),
        ("sim:x86-2", True, exitcodes.FIXABLE, {"rewrite"}),
        ("sim:x86-16", False, exitcodes.IMPOSSIBLE, {"fine", "impossible"}),
        ("sim:x86-64", False, exitcodes.IMPOSSIBLE, {"fine", "impossible"}),
        # The statuses of the rings the budget still holds vary with probe order.
        ("sim:x86-2,aio_max_nr=100", False, exitcodes.BUDGET, {"budget"}),
    ],
)
def test_inspect_verdicts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    wrong: bool,
    code: int,
    verdicts: set[str],
) -> None:
    d = tmp_path / "c"
    images = _ckpt(d, wrong=wrong)
    assert main(["inspect", str(d), "--kernel", spec, "--json"]) == code
    doc = _json(capsys)
    rings = doc["rings"]
    assert isinstance(rings, list) and len(rings) == 5
    got = {r["status"] for r in rings}
    assert got == verdicts if code != exitcodes.BUDGET else verdicts <= got
    for r in rings:
        if r["status"] in ("fine", "rewrite"):
            assert isinstance(r["nr_req"], int)
        else:
            assert r["nr_req"] is None and r["reason"]
    assert main(["inspect", str(d), "--kernel", spec]) == code
    text = capsys.readouterr().out
    assert "PID" in text and "STATUS" in text and f"{0x7F0000000000:#x}" in text
    assert _unchanged(d, images)


def test_impossible_names_the_host_fact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    _ckpt(d, wrong=False)
    assert main(["inspect", str(d), "--kernel", "sim:x86-64"]) == exitcodes.IMPOSSIBLE
    out = capsys.readouterr().out
    assert "64 possible CPUs" in out and "mm-10.img" in out


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("sim:x86-2", exitcodes.FIXABLE),
        ("sim:x86-64", exitcodes.IMPOSSIBLE),
        # k - 2 is exactly what a kernel without doubling builds: nothing to rewrite.
        ("sim:v3.10", exitcodes.OK),
    ],
)
def test_fix_never_writes_for_a_simulated_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, code: int
) -> None:
    d = tmp_path / "c"
    images = _ckpt(d, wrong=True)
    rc = main(["fix", str(d), "--kernel", spec, "--json"])
    doc = _json(capsys)
    fix = doc["fix"]
    assert isinstance(fix, dict) and fix["written"] is False
    assert rc == code
    if rc == exitcodes.FIXABLE:
        assert "not the live kernel" in str(fix["not_written"])
        assert fix["changes"]
    assert _unchanged(d, images)


def test_fix_library_never_writes_for_a_simulated_kernel(tmp_path: Path) -> None:
    d = tmp_path / "c"
    images = _ckpt(d, wrong=True)
    kernel = kernel_from_spec("sim:x86-2")
    with Session(d, write=True) as cp:
        result = cp.examine(kernel, intent=FIX)
    assert not result.written and not result.decision.write
    assert exitcodes.for_status(result.decision.status) == exitcodes.FIXABLE
    assert len(result.changes) == 5
    assert _unchanged(d, images)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with Session(fd, write=False) as cp:
            again = cp.examine(kernel, intent=REPORT, changes=True)
    finally:
        os.close(fd)
    assert again.changes == result.changes


@pytest.mark.live
def test_fix_on_the_live_kernel_then_revert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "c"
    images = _ckpt(d, wrong=True)
    assert main(["fix", str(d), "--dry-run"]) == exitcodes.FIXABLE
    assert "would change" in capsys.readouterr().out
    assert _unchanged(d, images)
    # `fix && criu restore` must restore: a fix that rewrote exits 0.
    assert main(["fix", str(d), "--json"]) == exitcodes.OK
    fix = _json(capsys)["fix"]
    assert isinstance(fix, dict) and fix["written"] is True and len(fix["changes"]) == 5
    assert main(["fix", str(d)]) == exitcodes.OK
    assert "nothing to do" in capsys.readouterr().out
    assert main(["inspect", str(d)]) == exitcodes.OK
    capsys.readouterr()
    assert main(["fix", str(d), "--revert", "--dry-run"]) == exitcodes.OK
    assert "would restore 2 image(s)" in capsys.readouterr().out
    assert main(["fix", str(d), "--revert"]) == exitcodes.OK
    assert {n: (d / n).read_bytes() for n in images} == images
    assert main(["inspect", str(d)]) == exitcodes.FIXABLE
    assert main(["fix", str(d), "--revert"]) == exitcodes.OK


@pytest.mark.live
def test_eight_concurrent_commands_end_consistent(tmp_path: Path) -> None:
    """Six `fix` and two `fix --revert` processes at once on one checkpoint."""
    d = tmp_path / "c"
    images = _ckpt(d, wrong=True)
    base = [sys.executable, "-m", "criu_aio_plugin", "fix", str(d)]
    cmds = [base] * 3 + [[*base, "--revert"]] + [base] * 3 + [[*base, "--revert"]]
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for c in cmds
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == exitcodes.OK, err
    now = {n: (d / n).read_bytes() for n in images}
    doc = json.loads((d / journal.JOURNAL_NAME).read_text())
    assert doc["pending"] is None
    if now == images:  # a revert ran last
        assert doc["originals"] == {}
    else:  # every image is the fixed version, and the journal can undo it
        assert set(doc["originals"]) == set(images)
        assert main(["fix", str(d)]) == exitcodes.OK
    assert main(["fix", str(d), "--revert"]) == exitcodes.OK
    assert {n: (d / n).read_bytes() for n in images} == images


def test_a_report_works_out_new_images_only_when_asked(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _ckpt(d, wrong=True)
    kernel = kernel_from_spec("sim:x86-2")
    with Session(d, write=False) as cp:
        verdict_only = cp.examine(kernel, intent=REPORT)
        with_changes = cp.examine(kernel, intent=REPORT, changes=True)
    assert verdict_only.decision == with_changes.decision
    assert verdict_only.changes == () and len(with_changes.changes) == 5
