"""Crash-safe, journaled, revertible rewrite of nr_req in a checkpoint.

How a transaction runs (python-atomicwrites' recipe, for several files):

1. Lock: ``flock(LOCK_EX)`` on a fresh open of the images directory, so runs
   on one checkpoint (8 at once in the tests) take turns; no lock file needed.
2. Recover: if the journal has ``pending``, the previous run died between its
   journal write and its last rename: roll it forward (see ``journal``). Then
   delete stale temp files (``.criu-aio-tmp.*``): under the lock none is live.
3. Compute every new image in memory (``splice``: only nr_req bytes change) and
   verify it by decoding it: the same mm_entry but for the nr_req values.
4. Write each to ``.criu-aio-tmp.<name>`` in the same directory with the
   original's mode and owner, fsync it. Any failure here (ENOSPC, EACCES, a
   file that vanished or changed since it was read) removes the temps and
   leaves the checkpoint exactly as it was.
5. Store the journal with ``pending`` (atomic replace, fsync, directory fsync).
6. Rename every temp over its image, fsync the directory.
7. Store the journal without ``pending``.

A crash before 5 leaves old images plus stale temps (removed by the next run);
a crash after 5 is rolled forward by the next run; rename(2) is atomic, so at
every instant each image is either the old or the new file, never torn.
"""

from __future__ import annotations

import errno as _errno
import os
import time

from criu_aio_plugin import protowire
from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import journal, raw, splice
from criu_aio_plugin.images.mm import (
    MAX_MM_IMAGE_SIZE,
    ImageRing,
    MmImage,
    locked_images_dir,
    mm_pid,
    open_images_dir,
    parse_mm,
    read_mm,
    read_regular_file,
)
from criu_aio_plugin.values import Value

# Lean core (docs/architecture.md): a restore whose rings need new nr_req
# values runs this.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractContextManager
    from hashlib import sha256 as _builtin_sha256
    from typing import Any

    from criu_aio_plugin.kernel.interface import HostFacts
else:
    try:
        # hashlib's sha256 comes from OpenSSL, whose loading costs ~2 ms on a
        # restore's critical path; the built-in module gives the same digest,
        # ~5x slower (2.7 ms per MB here): hashlib takes over past _BUILTIN_HASH_BUDGET.
        from _sha256 import sha256 as _builtin_sha256
    except ImportError:  # Python builds without it (3.12+ names it _sha2)
        from hashlib import sha256 as _builtin_sha256

_BUILTIN_HASH_BUDGET = 1 << 20
_builtin_hashed = 0

if TYPE_CHECKING:
    Log = Callable[[str], None]
ImagesDir = str | os.PathLike[str] | int


def _no_log(_: str) -> None:
    pass


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


def sha256(data: bytes) -> str:
    global _builtin_hashed
    if _builtin_hashed < _BUILTIN_HASH_BUDGET:
        _builtin_hashed += len(data)
        return _builtin_sha256(data).hexdigest()
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- the directory lock -----------------------------------------------------


def locked_dir(images_dir: ImagesDir) -> AbstractContextManager[tuple[int, str]]:
    """Open the images directory (a path or a borrowed fd) and hold its exclusive flock
    (``mm.locked_images_dir``)."""
    return locked_images_dir(images_dir)


# --- file I/O ----------------------------------------------------------------


def write_temp(
    dir_fd: int,
    shown: str,
    name: str,
    tmp: str,
    data: bytes,
    like: os.stat_result | None,
    sync: bool = True,
) -> None:
    """Write ``data`` to the new file ``tmp``, with ``like``'s mode and owner, fsynced.

    ``sync=False`` leaves the fsync to the caller (``_write_temps`` makes many
    temps durable with one syncfs). On failure the temp file is removed and
    ``ImageError`` (errno kept) names the image the temp stood for.
    """
    path = os.path.join(shown, name)
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as err:
        raise ImageError(
            f"cannot create a temporary file beside it: {err.strerror}",
            path=path,
            errno=err.errno,
            hint="the images directory must be writable",
        ) from err
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if like is not None:
            os.fchmod(fd, like.st_mode & 0o7777)
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
                os.fchown(fd, like.st_uid, like.st_gid)
                # chown clears set-id bits; put them back.
                os.fchmod(fd, like.st_mode & 0o7777)
        if sync:
            os.fsync(fd)
    except OSError as err:
        os.close(fd)
        _unlink_quietly(dir_fd, tmp)
        raise ImageError(
            f"cannot write the new version: {err.strerror}", path=path, errno=err.errno
        ) from err
    os.close(fd)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    # Cleanup after a failure must not mask the first error.
    try:  # noqa: SIM105 - contextlib stays off the restore path
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _fsync_dir(dir_fd: int, shown: str) -> None:
    try:
        os.fsync(dir_fd)
    except OSError as err:
        raise ImageError(
            f"cannot fsync the directory: {err.strerror}", path=shown, errno=err.errno
        ) from err


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


# --- verification ----------------------------------------------------------------


def verify_rewrite(image: MmImage, new: bytes, nr_req: Mapping[int, int]) -> None:
    """Prove ``new`` is ``image`` with exactly the rings' ``nr_req`` changed.

    Without protobuf (``criu-aio swrk`` rewrites on a restore's critical path):
    ``new`` must decode to the same rings with the new nr_req, and match the old
    bytes everywhere (header, every top-level field of the mm_entry, unknown
    fields included) except inside the aios submessages of those rings, where,
    walked field by field, only the nr_req varint may differ, holding the new value.
    """
    path = image.path
    new_rings = read_back(new, image)
    if [(r.ring_id, r.ring_len) for r in new_rings] != [
        (r.ring_id, r.ring_len) for r in image.rings
    ]:
        raise ImageError("internal check failed: the rewrite changed the rings", path=path)
    for old_ring, ring in zip(image.rings, new_rings, strict=True):
        want = nr_req.get(ring.ring_id, old_ring.nr_req)
        if ring.nr_req != want:
            raise ImageError(
                f"internal check failed: ring {ring.ring_id:#x} has nr_req {ring.nr_req}, "
                f"not {want}",
                path=path,
            )
    old_raw, new_raw = raw.loads_raw(image.data, path), raw.loads_raw(new, path)
    old, new_payload = old_raw.entries[0].payload, new_raw.entries[0].payload
    same = (old_raw.magic, old_raw.common_magic, len(old_raw.entries)) == (
        new_raw.magic,
        new_raw.common_magic,
        len(new_raw.entries),
    )
    # Walk the old payload's aios submessages (the new one was fully validated
    # above) and the new payload in step: every byte between them (every other
    # field) must be the same; each submessage is the same, or a changed ring's
    # with the same key and, walked field by field, only its nr_req different.
    pos = new_pos = 0
    for f in _aios(old, path) if same else ():
        gap = old[pos : f.start]
        sub_at = new_pos + len(gap)
        key = old[f.start : protowire.read_key(old, f.start, f.end)[1]]
        same = new_payload[new_pos:sub_at] == gap and (
            new_payload[sub_at : sub_at + f.end - f.start] == old[f.start : f.end]
            or new_payload[sub_at : sub_at + len(key)] == key
        )
        if not same:
            break
        try:
            value_start, value_end = protowire.read_length(
                new_payload, sub_at + len(key), len(new_payload), sub_at
            )
        except protowire.WireError:
            same = False
            break
        new_sub = new_payload[value_start:value_end]
        same = new_sub == old[f.value_start : f.end] or _same_but_nr_req(
            old[f.value_start : f.end], new_sub, nr_req, path
        )
        if not same:
            break
        pos, new_pos = f.end, value_end
    if not same or old[pos:] != new_payload[new_pos:]:
        raise ImageError("internal check failed: the rewrite changed more than nr_req", path=path)


def _aios(payload: bytes, path: str) -> list[protowire.Field]:
    """The aios submessages (field 16, length-delimited); the whole payload is validated."""
    try:
        found = protowire.find(payload, splice.AIOS_FIELD)
    except protowire.WireError as err:
        raise ImageError(f"internal check failed: {err}", path=path) from err
    return [f for f in found if f.wire_type == protowire.LENGTH_DELIMITED]


def _fields(submessage: bytes, path: str) -> list[protowire.Field]:
    try:
        return protowire.walk(submessage, depth=protowire.MAX_DEPTH - 1)
    except protowire.WireError as err:
        raise ImageError(f"internal check failed: {err}", path=path) from err


def _same_but_nr_req(old: bytes, new: bytes, nr_req: Mapping[int, int], path: str) -> bool:
    """One aios submessage: identical but for nr_req varints holding the new value."""
    old_fields, new_fields = _fields(old, path), _fields(new, path)
    ids = [f.value for f in old_fields if f.number == 1 and f.wire_type == protowire.VARINT]
    if not ids or ids[-1] not in nr_req or len(old_fields) != len(new_fields):
        return False
    for old_f, new_f in zip(old_fields, new_fields, strict=True):
        if (old_f.number, old_f.wire_type) != (new_f.number, new_f.wire_type):
            return False
        if old_f.number == 2 and old_f.wire_type == protowire.VARINT:
            if new_f.value != nr_req[ids[-1]]:
                return False
        elif old[old_f.start : old_f.end] != new[new_f.start : new_f.end]:
            return False
    return True


# --- recovery --------------------------------------------------------------------


def recover(dir_fd: int, shown: str, log: Log = _no_log) -> tuple[str, ...]:
    """Finish an interrupted transaction and remove stale temps (lock held)."""
    done: list[str] = []
    jr = journal.load(dir_fd, shown)
    if jr.pending is not None:
        for pf in jr.pending.files:
            done.append(_roll_forward(dir_fd, shown, pf))
        _fsync_dir(dir_fd, shown)
        jr.pending = None
        journal.store(dir_fd, shown, jr, _journal_writer(dir_fd, shown))
        for line in done:
            log(line)
    for name in _stale_temps(dir_fd, shown):
        _unlink_quietly(dir_fd, name)
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
        _unlink_quietly(dir_fd, pf.tmp)
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
        _unlink_quietly(dir_fd, pf.tmp)
        write_temp(dir_fd, shown, pf.file, pf.tmp, new, st)
    try:
        os.rename(pf.tmp, pf.file, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as err:
        raise ImageError(f"cannot replace: {err.strerror}", path=path, errno=err.errno) from err
    return f"{pf.file}: completed the rewrite of an interrupted run"


def _journal_writer(dir_fd: int, shown: str) -> Callable[[str, str, bytes, Any], None]:
    def write(name: str, tmp: str, data: bytes, like: os.stat_result | None) -> None:
        _unlink_quietly(dir_fd, tmp)
        write_temp(dir_fd, shown, name, tmp, data, like)

    return write


# --- the transaction -------------------------------------------------------------


class _Update(Value):
    image: MmImage
    new: bytes
    changes: dict[int, journal.Change]
    originals: dict[int, bytes]  # every ring's submessage bytes before this change


def _commit(
    dir_fd: int,
    shown: str,
    jr: journal.Journal,
    updates: Sequence[_Update],
    action: str,
    record: dict[str, Any],
) -> None:
    """Steps 4-7 of the module docstring; ``jr`` already holds the new originals."""
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
                    sha256(u.image.data),
                    sha256(u.new),
                    u.changes,
                )
                for u in updates
            ),
        )
        journal.store(dir_fd, shown, jr, _journal_writer(dir_fd, shown))
    except BaseException:
        for tmp in temps:
            _unlink_quietly(dir_fd, tmp)
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
    _fsync_dir(dir_fd, shown)
    jr.pending = None
    journal.store(dir_fd, shown, jr, _journal_writer(dir_fd, shown))


# Making the temps durable is most of a large rewrite's cost: 1,000 fsync(2)
# calls took 0.5 to 3 s on this machine's ext4 under load, one syncfs(2) after
# writing them all 0.06 s. A few files are fsynced one by one instead, so a
# small rewrite does not wait for unrelated dirty data of the filesystem.
_SYNCFS_FROM = 8


def _write_temps(dir_fd: int, shown: str, updates: Sequence[_Update], temps: list[str]) -> None:
    """Write every temp file (mode, owner) and make them all durable."""
    many = len(updates) >= _SYNCFS_FROM
    for u, tmp in zip(updates, temps, strict=True):
        _unlink_quietly(dir_fd, tmp)
        write_temp(dir_fd, shown, u.image.name, tmp, u.new, u.image.st, sync=not many)
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
    if not _same_file(st, image.st):
        raise ImageError(
            "changed while being rewritten; nothing was modified",
            path=image.path,
            errno=_errno.EBUSY,
            hint="run again once nothing else writes the checkpoint",
        )


def _now() -> str:
    # datetime.now(UTC).isoformat(timespec="seconds"), without importing datetime
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _read_named(dir_fd: int, shown: str, names: set[str]) -> dict[str, MmImage]:
    out = {}
    for name in sorted(names):
        if mm_pid(name) is None:
            raise ImageError("not an mm-<pid>.img file name", path=os.path.join(shown, name))
        out[name] = read_mm(dir_fd, name, shown)
    return out


def plan_changes(
    images: Mapping[str, MmImage], new_nr_req: Mapping[tuple[str, int], int]
) -> tuple[list[RingChange], list[_Update]]:
    """The ring changes and new file contents that ``new_nr_req`` asks for."""
    by_file: dict[str, dict[int, int]] = {}
    for (name, ring_id), nr in new_nr_req.items():
        by_file.setdefault(name, {})[ring_id] = nr
    changes: list[RingChange] = []
    updates: list[_Update] = []
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
            updates.append(_Update(image, new, dict(wanted), originals))
    return changes, updates


def _remember_originals(jr: journal.Journal, updates: Sequence[_Update]) -> None:
    for u in updates:
        old_sha = sha256(u.image.data)
        known = jr.originals.get(u.image.name)
        if known is None or known.current_sha256 != old_sha:
            # First change of this file, or the file was replaced since (a new
            # dump): what is there now is the original.
            known = journal.FileOriginal(old_sha, old_sha, u.originals)
        jr.originals[u.image.name] = journal.FileOriginal(known.sha256, sha256(u.new), known.rings)


def apply_fix_locked(
    dir_fd: int,
    shown: str,
    new_nr_req: Mapping[tuple[str, int], int],
    *,
    dry_run: bool = False,
    host: HostFacts | None = None,
    kernel_name: str = "",
    log: Log = _no_log,
    recovered: tuple[str, ...] = (),
    images: Mapping[str, MmImage] | None = None,
) -> ApplyResult:
    """``apply_fix`` for a caller that already holds ``locked_dir`` and ran ``recover``.

    ``images`` are the images as the caller read them under the same lock
    (saves reading them twice); by default the named ones are read here.
    """
    names = {name for name, _ in new_nr_req}
    if images is None or not names <= images.keys():
        images = _read_named(dir_fd, shown, names)
    changes, updates = plan_changes(images, new_nr_req)
    files = tuple(u.image.name for u in updates)
    if dry_run or not updates:
        return ApplyResult("fix", tuple(changes), files, False, recovered)
    jr = journal.load(dir_fd, shown)
    _remember_originals(jr, updates)
    record = {
        "action": "fix",
        "time": _now(),
        "kernel": kernel_name,
        "host": host.as_dict() if host is not None else None,
        "changes": [c.as_dict() for c in changes],
    }
    _commit(dir_fd, shown, jr, updates, "fix", record)
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
    log: Log = _no_log,
) -> ApplyResult:
    """Set nr_req of the rings named ``(mm image file name, ring address)``.

    Transactional (module docstring); rings already at their value are left
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


def revert(images_dir: ImagesDir, *, dry_run: bool = False, log: Log = _no_log) -> ApplyResult:
    """Put back every ring criu-aio changed, byte for byte, from the journal.

    Refuses (``ImageError``, nothing written) when an image changed since
    criu-aio last wrote it. Reverting twice is a no-op.
    """
    ctx = open_images_dir(images_dir) if dry_run else locked_dir(images_dir)
    with ctx as (dir_fd, shown):
        recovered = () if dry_run else recover(dir_fd, shown, log)
        jr = journal.load(dir_fd, shown)
        images = _read_named(dir_fd, shown, set(jr.originals))
        changes: list[RingChange] = []
        updates: list[_Update] = []
        for name, orig in sorted(jr.originals.items()):
            image = images[name]
            if sha256(image.data) != orig.current_sha256:
                raise ImageError(
                    "changed since criu-aio rewrote it (a new dump?); not reverting anything",
                    path=image.path,
                    hint=f"if the checkpoint is new, remove {journal.JOURNAL_NAME}",
                )
            rings = {r.ring_id: r for r in image.rings}
            new = splice.splice(image.data, image.path, dict(orig.rings))
            if sha256(new) != orig.sha256:
                raise ImageError("cannot rebuild the original bytes", path=image.path)
            restored = {r.ring_id: r.nr_req for r in read_back(new, image)}
            for ring_id in sorted(orig.rings):
                ring = rings[ring_id]
                if ring.nr_req != restored[ring_id]:
                    changes.append(
                        RingChange(name, ring_id, ring.ring_len, ring.nr_req, restored[ring_id])
                    )
            updates.append(_Update(image, new, dict(orig.rings), {}))
        files = tuple(u.image.name for u in updates)
        if dry_run or not updates:
            return ApplyResult("revert", tuple(changes), files, False, recovered)
        jr.originals = {}
        record = {
            "action": "revert",
            "time": _now(),
            "changes": [c.as_dict() for c in changes],
        }
        _commit(dir_fd, shown, jr, updates, "revert", record)
        for c in changes:
            log(f"{c.file}: ring {c.ring_id:#x} nr_req {c.old_nr_req} -> {c.new_nr_req} (revert)")
        return ApplyResult("revert", tuple(changes), files, True, recovered)


def read_back(data: bytes, image: MmImage) -> tuple[ImageRing, ...]:
    """The rings of ``data`` (new bytes for ``image``), validated."""
    return parse_mm(data, image.path, image.pid)
