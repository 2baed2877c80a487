"""kill -9 the rewrite at random instants: every image stays whole, old or new.

A forked child runs one transaction (fix to nr_req set A, fix to set B, or
revert) on a 12-image checkpoint; the parent SIGKILLs it after a random delay
drawn over the length of a whole transaction (measured first; every other
delay from its second half, where the short I/O stretch lies), so kills land
in the reading, the temp writes and syncfs, the journal write, the renames
and the recovery of the previous kill alike. After each kill every image must
decode and be byte-identical to either the version before the transaction or
the version after it; then a following run of the same transaction in this
process must complete (recovering what the kill left) and give exactly the new
version. Forking from the test process keeps a run at a few milliseconds, so
200+ kills fit in well under a minute.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from criu_aio_plugin.images import journal, mm, rewrite, splice, synthetic

pytestmark = pytest.mark.slow

KILLS = 220
IMAGES = 12


def _versions(d: Path) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
    """Original, set-A and set-B bytes of every image (made by the splice)."""
    orig: dict[str, bytes] = {}
    for pid in range(1, IMAGES + 1):
        data = synthetic.mm_image_bytes(synthetic.rings_for([1, 2, 4, 8]), 200, pid)
        (d / f"mm-{pid}.img").write_bytes(data)
        orig[f"mm-{pid}.img"] = data
    a, b = {}, {}
    for name, data in orig.items():
        rings = mm.parse_mm(data, name, 0)
        a[name] = splice.splice(data, name, {r.ring_id: r.nr_req // 2 for r in rings})
        b[name] = splice.splice(data, name, {r.ring_id: r.nr_req + 300 for r in rings})
    return orig, a, b


def _target(version: dict[str, bytes]) -> dict[tuple[str, int], int]:
    return {
        (name, r.ring_id): r.nr_req
        for name, data in version.items()
        for r in mm.parse_mm(data, name, 0)
    }


def _run_in_child(action: Callable[[], object], delay: float) -> bool:
    """Fork, run ``action`` in the child, SIGKILL it after ``delay``; True if killed."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            action()
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the transaction failed on its own"
            return False
        time.sleep(min(0.0005, max(0.0, deadline - time.monotonic())))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0


def _pending(d: Path) -> bool:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return journal.load(fd, str(d)).pending is not None
    finally:
        os.close(fd)


def test_kill_minus_nine_at_random_instants(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    orig, a, b = _versions(d)
    d_str = str(d)
    steps: list[tuple[dict[str, bytes], Callable[[], object]]] = [
        (a, lambda: rewrite.apply_fix(d_str, _target(a))),
        (b, lambda: rewrite.apply_fix(d_str, _target(b))),
        (orig, lambda: rewrite.revert(d_str)),
    ]
    # How long one whole transaction takes in a forked child here (fork and
    # copy-on-write included): kills are spread over that span (the median of
    # six runs, so that one slow outlier does not let most runs finish).
    spans = []
    for _ in range(2):
        for _new, action in steps:
            t0 = time.monotonic()
            assert not _run_in_child(action, 30.0)
            spans.append(time.monotonic() - t0)
    span = statistics.median(spans)
    assert {n: (d / n).read_bytes() for n in orig} == orig

    rnd = random.Random(20261125)
    current = orig
    killed = 0
    seen = {"old": 0, "new": 0, "mixed": 0, "pending journal": 0}
    i = 0
    while killed < KILLS and i < 4 * KILLS:
        new, action = steps[i % 3]
        # Every other kill anywhere in the span (and a little past it, a run's
        # length varies), the others in its second half: the journal write,
        # renames and commit are a short stretch at the end of a transaction
        # (most of it is reading, decoding and verifying).
        low = 0.0 if i % 2 else 0.6 * span
        was_killed = _run_in_child(action, rnd.uniform(low, 1.15 * span))
        killed += was_killed
        for name in orig:
            data = (d / name).read_bytes()
            assert data in (current[name], new[name]), f"kill {i}: {name} is neither old nor new"
            mm.parse_mm(data, name, 0)  # decodes
        now = {n: (d / n).read_bytes() for n in orig}
        state = "old" if now == current else "new" if now == new else "mixed"
        if was_killed:
            seen[state] += 1
            seen["pending journal"] += _pending(d)
        action()  # the following run completes
        assert {n: (d / n).read_bytes() for n in orig} == new, f"kill {i}: run did not complete"
        assert not [n for n in os.listdir(d) if n.startswith(journal.TMP_PREFIX)]
        current = new
        i += 1
    assert killed >= 200, f"only {killed} of {KILLS} runs were killed mid-way ({seen})"
    # Kills landed both before the renames and after the first of them.
    assert seen["old"] >= 10 and seen["new"] + seen["mixed"] >= 3, seen
    print(f"{killed} kills; states after a kill: {seen}")


CLI_KILLS = 12


@pytest.mark.live
def test_kill_minus_nine_the_fix_command(tmp_path: Path) -> None:
    """The real `criu-aio fix` process (live kernel, probe worker and all), killed."""
    d = tmp_path / "ckpt"
    d.mkdir()
    _orig, _a, orig = _versions(d)  # start from set B: nr_req + 300, wrong here
    for name, data in orig.items():
        (d / name).write_bytes(data)
    cmd = [sys.executable, "-m", "criu_aio_plugin", "fix", str(d)]
    t0 = time.monotonic()
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    span = time.monotonic() - t0
    assert first.returncode == 0, first.stdout + first.stderr  # rewrote: restores here
    fixed = {n: (d / n).read_bytes() for n in orig}
    assert fixed != orig
    rnd = random.Random(7)
    for i in range(CLI_KILLS):
        rewrite.revert(str(d))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0, span))
        proc.kill()
        proc.wait(30)
        for name in orig:
            data = (d / name).read_bytes()
            assert data in (orig[name], fixed[name]), f"kill {i}: {name} is neither old nor new"
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert {n: (d / n).read_bytes() for n in orig} == fixed
