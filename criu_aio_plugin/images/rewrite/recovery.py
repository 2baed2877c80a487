"""Step 2 of a transaction: finish an interrupted one, remove stale temps.

A run that died after storing its journal with ``pending`` (step 5) left
renames undone: each file named there is rolled forward, from its temp, or,
when the temp was lost, rebuilt from the old image and the recorded change
and proven identical by its digest. A file that is neither the old nor the
new version was changed by someone else: nothing is touched.
"""

from __future__ import annotations

import os

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import journal, splice
from criu_aio_plugin.images.mm import MAX_MM_IMAGE_SIZE, read_regular_file
from criu_aio_plugin.images.rewrite.atomic import (
    fsync_dir,
    journal_writer,
    sha256,
    unlink_quietly,
    write_temp,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Log = Callable[[str], None]


def no_log(_: str) -> None:
    pass


def recover(dir_fd: int, shown: str, log: Log = no_log) -> tuple[str, ...]:
    """Finish an interrupted transaction and remove stale temps (lock held)."""
    done: list[str] = []
    jr = journal.load(dir_fd, shown)
    if jr.pending is not None:
        for pf in jr.pending.files:
            done.append(_roll_forward(dir_fd, shown, pf))
        fsync_dir(dir_fd, shown)
        jr.pending = None
        journal.store(dir_fd, shown, jr, journal_writer(dir_fd, shown))
        for line in done:
            log(line)
    for name in _stale_temps(dir_fd, shown):
        unlink_quietly(dir_fd, name)
        done.append(f"removed stale temporary file {name}")
        log(done[-1])
    return tuple(done)


def _stale_temps(dir_fd: int, shown: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(dir_fd) if n.startswith(journal.TMP_PREFIX))
    except OSError as err:
        raise ImageError(f"cannot list: {err.strerror}", path=shown, errno=err.errno) from err


def _roll_forward(dir_fd: int, shown: str, pf: journal.PendingFile) -> str:
    path = os.path.join(shown, pf.file)
    current, st = read_regular_file(dir_fd, pf.file, path, MAX_MM_IMAGE_SIZE)
    digest = sha256(current)
    if digest == pf.new_sha256:
        unlink_quietly(dir_fd, pf.tmp)
        return f"{pf.file}: interrupted run had already replaced it"
    if digest != pf.old_sha256:
        raise ImageError(
            "changed by someone else while a criu-aio run was interrupted; not touching it",
            path=path,
            hint=f"inspect it, then remove {journal.JOURNAL_NAME} if the checkpoint is sound",
        )
    tmp_ok = False
    try:
        tmp_data, _ = read_regular_file(dir_fd, pf.tmp, path, MAX_MM_IMAGE_SIZE)
        tmp_ok = sha256(tmp_data) == pf.new_sha256
    except ImageError:
        pass  # gone or unreadable: rebuilt below
    if not tmp_ok:
        # The temp is gone or damaged (someone removed it): rebuild it from the
        # old image and the recorded change, and prove it is the same result.
        new = splice.splice(current, path, pf.changes)
        if sha256(new) != pf.new_sha256:
            raise ImageError("cannot rebuild the interrupted rewrite of this file", path=path)
        unlink_quietly(dir_fd, pf.tmp)
        write_temp(dir_fd, shown, pf.file, pf.tmp, new, st)
    try:
        os.rename(pf.tmp, pf.file, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as err:
        raise ImageError(f"cannot replace: {err.strerror}", path=path, errno=err.errno) from err
    return f"{pf.file}: completed the rewrite of an interrupted run"
