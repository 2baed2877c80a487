"""kill -9 a fix or revert of an archive at random instants: the archive is old or new.

Like tests/slow/test_crash.py for directories: a forked child runs one
transaction (fix to nr_req set A, to set B, or revert) on a gzip and on an
uncompressed checkpoint archive; the parent SIGKILLs it after a random delay
spread over a whole transaction's length (every other one in its second half,
where the journal write and the rename lie). After each kill the archive must
be byte-identical to the version before the transaction or the one after it
(never torn, never a mix), and the next run of the same transaction must
complete, recovering what the kill left, with no temp file left behind.
"""

from __future__ import annotations

import gzip
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from testbed import archives

from criu_aio_plugin.images.archive import fix_archive, read_archive, revert_archive
from criu_aio_plugin.images.archive import journal as ajournal

pytestmark = pytest.mark.slow

KILLS = 90  # per format


def stream(path: Path) -> bytes:
    """The archive's tar stream (a torn gzip file fails to decompress: that fails too)."""
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


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
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_kill_minus_nine_at_random_instants(tmp_path: Path, compression: str) -> None:
    images = archives.synthetic_images(
        tmp_path / "images", {p: [1, 2, 4] for p in range(100, 112)}, pages=2 << 20
    )
    path = archives.podman_archive(images, tmp_path, compression, name="ckpt.tar")
    rings = read_archive(path).rings
    set_a = {(r.file, r.ring_id): r.nr_req // 2 + 1 for r in rings}
    set_b = {(r.file, r.ring_id): r.nr_req + 300 for r in rings}
    p = str(path)
    steps: list[Callable[[], object]] = [
        lambda: fix_archive(p, set_a),
        lambda: fix_archive(p, set_b),
        lambda: revert_archive(p),
    ]
    # The three versions, made by running each step once to the end.
    versions = [stream(path)]
    for action in steps:
        action()
        versions.append(stream(path))
    assert versions[3] == versions[0]
    spans = []
    for action in steps * 2:
        t0 = time.monotonic()
        assert not _run_in_child(action, 60.0)
        spans.append(time.monotonic() - t0)
    span = statistics.median(spans)

    rnd = random.Random(20261201)
    seen = {"old": 0, "new": 0, "pending journal": 0}
    killed = i = 0
    while killed < KILLS and i < 4 * KILLS:
        step = i % 3
        old, new = versions[step], versions[step + 1]
        low = 0.0 if i % 2 else 0.6 * span
        was_killed = _run_in_child(steps[step], rnd.uniform(low, 1.15 * span))
        killed += was_killed
        now = stream(path)
        assert now in (old, new), f"kill {i}: the archive is neither old nor new"
        if was_killed:
            seen["old" if now == old else "new"] += 1
            jr_path = Path(f"{path}{ajournal.SUFFIX}")
            seen["pending journal"] += jr_path.exists() and '"pending": {' in jr_path.read_text()
        steps[step]()  # the following run completes
        assert stream(path) == new, f"kill {i}: the next run did not complete"
        assert not (tmp_path / ajournal.temp_name(path.name)).exists()
        i += 1
    assert killed >= KILLS * 0.8, f"only {killed} runs were killed mid-way ({seen})"
    assert seen["old"] >= 10, seen
    print(f"{compression}: {killed} kills; after a kill: {seen}")
