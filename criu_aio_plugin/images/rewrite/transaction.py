"""Steps 3 to 7 of a transaction: plan the new images, write them, commit.

``apply_fix`` is the whole transaction (lock, recover, commit); callers that
already hold the lock and ran ``recover`` use ``apply_fix_locked``.
"""

from __future__ import annotations

import errno as _errno
import os
import time

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import journal, splice
from criu_aio_plugin.images.mm import MmImage, mm_pid, open_images_dir, read_mm
from criu_aio_plugin.images.rewrite import atomic
from criu_aio_plugin.images.rewrite.lock import ImagesDir, locked_dir
from criu_aio_plugin.images.rewrite.recovery import no_log, recover
from criu_aio_plugin.images.rewrite.verify import verify_rewrite
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from criu_aio_plugin.images.rewrite.recovery import Log
    from criu_aio_plugin.kernel.interface import HostFacts


class RingChange(Value):
    """One ring whose nr_req a transaction changed (or would change)."""

    # In this order in reports (as_dict follows the fields' order).
    file: str
    ring_id: int
    ring_len: int
    old_nr_req: int
    new_nr_req: int


class ApplyResult(Value):
    """What a fix or revert did.

    ``written`` is False for a dry run and when nothing needed changing;
    ``recovered`` lists what was done to finish an interrupted earlier run.
    """

    action: str
    changes: tuple[RingChange, ...]
    files: tuple[str, ...]
    written: bool
    recovered: tuple[str, ...] = ()


class Update(Value):
    """One file of a transaction: its image as read, and its new bytes."""

    image: MmImage
    new: bytes
    changes: dict[int, journal.Change]
    originals: dict[int, bytes]  # every ring's submessage bytes before this change


def commit(
    dir_fd: int,
    shown: str,
    jr: journal.Journal,
    updates: Sequence[Update],
    action: str,
    record: dict[str, Any],
) -> None:
    """Steps 4-7 (package docstring); ``jr`` already holds the new originals."""
    temps = [journal.tmp_name(u.image.name) for u in updates]
    try:
        _write_temps(dir_fd, shown, updates, temps)
        for u in updates:
            _check_unchanged(dir_fd, u.image)
        jr.history.append(record)
        jr.pending = journal.Pending(
            os.urandom(16).hex(),  # a random transaction id (uuid4 would import platform)
            action,
            tuple(
                journal.PendingFile(
                    u.image.name,
                    journal.tmp_name(u.image.name),
                    atomic.sha256(u.image.data),
                    atomic.sha256(u.new),
                    u.changes,
                )
                for u in updates
            ),
        )
        journal.store(dir_fd, shown, jr, atomic.journal_writer(dir_fd, shown))
    except BaseException:
        for tmp in temps:
            atomic.unlink_quietly(dir_fd, tmp)
        raise
    # From here on the journal lets the next run roll forward: no cleanup.
    for u in updates:
        try:
            os.rename(
                journal.tmp_name(u.image.name), u.image.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd
            )
        except OSError as err:
            raise ImageError(
                f"cannot replace: {err.strerror}",
                path=u.image.path,
                errno=err.errno,
                hint="run the same command again: it completes the interrupted rewrite",
            ) from err
    atomic.fsync_dir(dir_fd, shown)
    jr.pending = None
    journal.store(dir_fd, shown, jr, atomic.journal_writer(dir_fd, shown))


# Making the temps durable is most of a large rewrite's cost: 1,000 fsync(2)
# calls took 0.5 to 3 s on this machine's ext4 under load, one syncfs(2) after
# writing them all 0.06 s. A few files are fsynced one by one instead, so a
# small rewrite does not wait for unrelated dirty data of the filesystem.
_SYNCFS_FROM = 8


def _write_temps(dir_fd: int, shown: str, updates: Sequence[Update], temps: list[str]) -> None:
    """Write every temp file (mode, owner) and make them all durable."""
    many = len(updates) >= _SYNCFS_FROM
    for u, tmp in zip(updates, temps, strict=True):
        atomic.unlink_quietly(dir_fd, tmp)
        atomic.write_temp(dir_fd, shown, u.image.name, tmp, u.new, u.image.st, sync=not many)
    if many:
        from criu_aio_plugin.kernel import syscalls  # ctypes, only for many files

        try:
            syscalls.syncfs(dir_fd)
        except OSError as err:
            raise ImageError(
                f"cannot flush the new versions to disk: {err.strerror}",
                path=shown,
                errno=err.errno,
            ) from err


def _check_unchanged(dir_fd: int, image: MmImage) -> None:
    try:
        st = os.stat(image.name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as err:
        raise ImageError(
            f"vanished while being rewritten: {err.strerror}", path=image.path, errno=err.errno
        ) from err
    if not atomic.same_file(st, image.st):
        raise ImageError(
            "changed while being rewritten; nothing was modified",
            path=image.path,
            errno=_errno.EBUSY,
            hint="run again once nothing else writes the checkpoint",
        )


def now() -> str:
    """The time for a journal record."""
    # datetime.now(UTC).isoformat(timespec="seconds"), without importing datetime
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def read_named(dir_fd: int, shown: str, names: set[str]) -> dict[str, MmImage]:
    """The mm images *names* of the directory, read and validated."""
    out = {}
    for name in sorted(names):
        if mm_pid(name) is None:
            raise ImageError("not an mm-<pid>.img file name", path=os.path.join(shown, name))
        out[name] = read_mm(dir_fd, name, shown)
    return out


def plan_changes(
    images: Mapping[str, MmImage], new_nr_req: Mapping[tuple[str, int], int]
) -> tuple[list[RingChange], list[Update]]:
    """The ring changes and new file contents that ``new_nr_req`` asks for."""
    by_file: dict[str, dict[int, int]] = {}
    for (name, ring_id), nr in new_nr_req.items():
        by_file.setdefault(name, {})[ring_id] = nr
    changes: list[RingChange] = []
    updates: list[Update] = []
    for name in sorted(by_file):
        image = images[name]
        rings = {r.ring_id: r for r in image.rings}
        wanted: dict[int, int] = {}
        for ring_id, nr in sorted(by_file[name].items()):
            ring = rings.get(ring_id)
            if ring is None:
                raise ImageError(
                    f"no ring at {ring_id:#x} in this image", path=image.path, field="mm_entry.aios"
                )
            if nr <= 0 or nr >= 1 << 32:
                raise ImageError(
                    f"new nr_req {nr} for ring {ring_id:#x} is out of range",
                    path=image.path,
                    field="mm_entry.aios.nr_req",
                )
            if ring.nr_req != nr:
                wanted[ring_id] = nr
                changes.append(RingChange(name, ring_id, ring.ring_len, ring.nr_req, nr))
        if wanted:
            originals: dict[int, bytes] = {}
            new = splice.splice(image.data, image.path, dict(wanted), originals)
            verify_rewrite(image, new, wanted)
            updates.append(Update(image, new, dict(wanted), originals))
    return changes, updates


def _remember_originals(jr: journal.Journal, updates: Sequence[Update]) -> None:
    for u in updates:
        old_sha = atomic.sha256(u.image.data)
        known = jr.originals.get(u.image.name)
        if known is None or known.current_sha256 != old_sha:
            # First change of this file, or the file was replaced since (a new
            # dump): what is there now is the original.
            known = journal.FileOriginal(old_sha, old_sha, u.originals)
        jr.originals[u.image.name] = journal.FileOriginal(
            known.sha256, atomic.sha256(u.new), known.rings
        )


def apply_fix_locked(
    dir_fd: int,
    shown: str,
    new_nr_req: Mapping[tuple[str, int], int],
    *,
    dry_run: bool = False,
    host: HostFacts | None = None,
    kernel_name: str = "",
    log: Log = no_log,
    recovered: tuple[str, ...] = (),
    images: Mapping[str, MmImage] | None = None,
) -> ApplyResult:
    """``apply_fix`` for a caller that already holds ``locked_dir`` and ran ``recover``.

    ``images`` are the images as the caller read them under the same lock
    (saves reading them twice); by default the named ones are read here.
    """
    names = {name for name, _ in new_nr_req}
    if images is None or not names <= images.keys():
        images = read_named(dir_fd, shown, names)
    changes, updates = plan_changes(images, new_nr_req)
    files = tuple(u.image.name for u in updates)
    if dry_run or not updates:
        return ApplyResult("fix", tuple(changes), files, False, recovered)
    jr = journal.load(dir_fd, shown)
    _remember_originals(jr, updates)
    record = {
        "action": "fix",
        "time": now(),
        "kernel": kernel_name,
        "host": host.as_dict() if host is not None else None,
        "changes": [c.as_dict() for c in changes],
    }
    commit(dir_fd, shown, jr, updates, "fix", record)
    for c in changes:
        log(f"{c.file}: ring {c.ring_id:#x} nr_req {c.old_nr_req} -> {c.new_nr_req}")
    return ApplyResult("fix", tuple(changes), files, True, recovered)


def apply_fix(
    images_dir: ImagesDir,
    new_nr_req: Mapping[tuple[str, int], int],
    *,
    dry_run: bool = False,
    host: HostFacts | None = None,
    kernel_name: str = "",
    log: Log = no_log,
) -> ApplyResult:
    """Set nr_req of the rings named ``(mm image file name, ring address)``.

    Transactional (package docstring); rings already at their value are left
    alone, so repeating a run changes nothing. ``dry_run`` computes and verifies
    every new image but writes nothing and takes no lock.
    """
    if dry_run:
        with open_images_dir(images_dir) as (dir_fd, shown):
            return apply_fix_locked(dir_fd, shown, new_nr_req, dry_run=True)
    with locked_dir(images_dir) as (dir_fd, shown):
        recovered = recover(dir_fd, shown, log)
        return apply_fix_locked(
            dir_fd,
            shown,
            new_nr_req,
            host=host,
            kernel_name=kernel_name,
            log=log,
            recovered=recovered,
        )
