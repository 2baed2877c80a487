"""Keeping the checkpoint's pids free: the pid counter is moved past them before forking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from criu_aio_plugin.rpc import pids


def test_needed_pids_from_image_names(tmp_path: Path) -> None:
    for name in ("core-10.img", "core-11.img", "mm-10.img", "pstree.img", "core-x.img", "mm-3.log"):
        (tmp_path / name).write_bytes(b"")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert pids.needed_pids(fd) == {10, 11}
    finally:
        os.close(fd)


@pytest.mark.skipif(pids.last_pid() is None, reason="no /proc/sys/kernel/ns_last_pid")
def test_counter_moves_past_needed_pids_ahead() -> None:
    last = pids.last_pid()
    assert last is not None
    ahead = {last + 3, last + 6}
    burned = pids.steer_clear(ahead)
    after = pids.last_pid()
    assert after is not None and after >= last + 6
    assert 1 <= burned <= pids.WINDOW
    # nothing needed ahead: no fork at all
    assert pids.steer_clear({1}) == 0


@pytest.mark.skipif(pids.last_pid() is None, reason="no /proc/sys/kernel/ns_last_pid")
def test_steering_is_capped_per_request() -> None:
    """A folder naming thousands of pids right after the counter (core-<N>.img files a
    client of the root service controls) costs at most MAX_FORKS forks."""
    last = pids.last_pid()
    assert last is not None
    needed = set(range(last + 1, last + 5000))
    assert pids.steer_clear(needed) == pids.MAX_FORKS == 2 * pids.WINDOW
