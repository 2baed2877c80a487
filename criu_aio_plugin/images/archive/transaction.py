"""fix and revert of a checkpoint archive: one journaled, atomic replacement.

How a fix runs (``fix_archive``; ``revert_archive`` is the same with the
journal's original bytes):

1. Lock: ``flock(LOCK_EX)`` on the directory that receives the archive, so
   runs on it take turns. Recover: finish or roll back a run that was killed
   (``journal`` explains how), remove a stale temp file.
2. Scan the archive (``read``): validate every member, read the mm images;
   compute every new mm image (``rewrite.plan_changes``: the splice of the
   directory rewrite, verified by decoding it).
3. Write the fixed archive to ``.NAME.criu-aio-tmp`` in the same directory
   (``write``: every byte copied but the replaced members'; the source is
   re-checked as it is copied), with the original's mode (and owner, in
   place), and fsync it. Any failure removes the temp: nothing changed.
4. Store the sidecar journal with ``pending``; rename the temp over the
   archive; fsync the directory; store the journal without ``pending``.

A crash before 4 leaves the old archive and a stale temp; during 4 the next
run rolls forward or back; rename(2) is atomic, so at every instant the
archive path holds the old archive or the new one, never a torn file.

``fix_archive(..., output=NEW)`` writes NEW (which must not exist) and its
own journal, and never touches the source; its journal carries the source's
originals when the source had been fixed before, so ``--revert`` on NEW gives
back what CRIU wrote.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import splice
from criu_aio_plugin.images.archive import journal as ajournal
from criu_aio_plugin.images.archive.journal import ArchiveJournal, FileId, Pending
from criu_aio_plugin.images.archive.read import (
    DEFAULT_LIMITS,
    ArchiveCheckpoint,
    ArchiveScan,
    Limits,
    checkpoint_of,
    read_archive,
    scan_fd,
)
from criu_aio_plugin.images.archive.streams import Compression
from criu_aio_plugin.images.archive.write import Replacement, copy_whole, write_fixed
from criu_aio_plugin.images.journal import FileOriginal
from criu_aio_plugin.images.mm import MmImage, parse_mm
from criu_aio_plugin.images.rewrite import ApplyResult, RingChange, plan_changes
from criu_aio_plugin.images.rewrite.atomic import create_temp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.kernel.interface import HostFacts

Log = Callable[[str], None]


def _no_log(_: str) -> None:
    pass


@dataclass(frozen=True)
class ArchiveApplied:
    """What a fix or revert of an archive did; ``archive`` is the file written (or to be)."""

    result: ApplyResult
    archive: str
    source: str
    compression: Compression
    journal: str | None  # the sidecar written, None when nothing was written

    @property
    def written(self) -> bool:
        return self.result.written


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _split(path: str) -> tuple[str, str]:
    shown_dir, name = os.path.split(path)
    if not name:
        raise ImageError("not a file name", path=path)
    return shown_dir or ".", name


@contextlib.contextmanager
def _directory(shown_dir: str, lock: bool) -> Iterator[int]:
    try:
        dir_fd = os.open(shown_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ImageError(
            f"cannot open the archive's directory: {err.strerror}", path=shown_dir, errno=err.errno
        ) from err
    try:
        if lock:
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX)
            except OSError as err:
                raise ImageError(
                    f"cannot lock the directory: {err.strerror}", path=shown_dir, errno=err.errno
                ) from err
        yield dir_fd
    finally:
        os.close(dir_fd)


def _file_id(dir_fd: int, name: str, shown: str) -> FileId | None:
    try:
        return FileId.of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ImageError(f"cannot stat: {err.strerror}", path=shown, errno=err.errno) from err


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


# --- recovery ------------------------------------------------------------------------


def recover(dir_fd: int, shown_dir: str, name: str, log: Log = _no_log) -> tuple[str, ...]:
    """Finish or roll back an interrupted transaction on archive ``name`` (lock held)."""
    shown = os.path.join(shown_dir, name)
    done: list[str] = []
    jr = ajournal.load(dir_fd, shown_dir, name)
    if jr is not None and jr.pending is not None:
        p = jr.pending
        current = _file_id(dir_fd, name, shown)
        restored: ArchiveJournal | None = jr
        if current == p.new:
            done.append(f"{name}: an interrupted run had already replaced it; journal completed")
        elif current == p.old:
            if _file_id(dir_fd, p.tmp, shown) == p.new:
                try:
                    os.rename(p.tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    os.fsync(dir_fd)
                except OSError as err:
                    raise ImageError(
                        f"cannot complete an interrupted run: {err.strerror}",
                        path=shown,
                        errno=err.errno,
                    ) from err
                done.append(f"{name}: completed the {p.action} of an interrupted run")
            else:
                _unlink_quietly(dir_fd, p.tmp)
                restored = None if p.before is None else ajournal.from_json(p.before)
                done.append(
                    f"{name}: rolled back an interrupted {p.action} (its temp file was gone)"
                )
        else:
            raise ImageError(
                "replaced by someone else while a criu-aio run on it was interrupted; "
                "not touching it",
                path=shown,
                hint=f"inspect it, then remove {ajournal.journal_name(name)} if it is sound",
            )
        if restored is None:
            ajournal.remove(dir_fd, shown_dir, name)
        else:
            restored.pending = None
            ajournal.store(dir_fd, shown_dir, restored)
    tmp = ajournal.temp_name(name)
    if _file_id(dir_fd, tmp, shown) is not None:
        _unlink_quietly(dir_fd, tmp)
        done.append(f"removed stale temporary file {tmp}")
    for line in done:
        log(line)
    return tuple(done)


def recover_archive(path: str | os.PathLike[str], log: Log = _no_log) -> tuple[str, ...]:
    """``recover`` for the archive at ``path``, under its directory's lock."""
    shown_dir, name = _split(os.fspath(path))
    with _directory(shown_dir, lock=True) as dir_fd:
        return recover(dir_fd, shown_dir, name, log)


# --- planning --------------------------------------------------------------------------


def _images(cp: ArchiveCheckpoint) -> dict[str, MmImage]:
    return {image.name: image for image in cp.mm_images}


def _current_originals(
    jr: ArchiveJournal | None, images: Mapping[str, MmImage]
) -> dict[str, FileOriginal]:
    """The journal's originals still true of the archive (others describe an older one)."""
    if jr is None or jr.pending is not None:
        return {}
    return {
        name: o
        for name, o in jr.originals.items()
        if name in images and sha256(images[name].data) == o.current_sha256
    }


def _next_journal(
    name: str,
    cp: ArchiveCheckpoint,
    previous: ArchiveJournal | None,
    originals: dict[str, FileOriginal],
    record: dict[str, Any],
) -> ArchiveJournal:
    return ArchiveJournal(
        name,
        cp.compression.value,
        cp.images_prefix,
        originals,
        [*(previous.history if previous else []), record],
    )


def _replacements(
    cp: ArchiveCheckpoint, new_images: Sequence[tuple[MmImage, bytes]]
) -> list[Replacement]:
    return [
        Replacement(cp.mm_members[image.name], sha256(image.data), new) for image, new in new_images
    ]


# --- the commit ------------------------------------------------------------------------


def _check_space(dir_fd: int, shown_dir: str, scan: ArchiveScan) -> None:
    if scan.compression is Compression.NONE:
        needed = scan.st.st_blocks * 512  # holes are kept: allocated blocks, not size
    else:
        needed = scan.st.st_size + (scan.st.st_size >> 4)  # recompression may differ a bit
    needed += 1 << 20
    try:
        vfs = os.fstatvfs(dir_fd)
    except OSError:
        return
    free = vfs.f_bavail * vfs.f_frsize
    if free < needed:
        raise ImageError(
            f"the fixed archive needs about {needed} bytes, {free} are free there; "
            "nothing was changed",
            path=shown_dir,
            errno=_errno.ENOSPC,
            hint="free space, or write it elsewhere with --output",
        )


def _commit(
    dir_fd: int,
    shown_dir: str,
    name: str,
    src_fd: int,
    scan: ArchiveScan,
    reps: Sequence[Replacement] | None,
    jr: ArchiveJournal | None,
    before: ArchiveJournal | None,
    action: str,
    in_place: bool,
) -> None:
    """Steps 3 and 4 of the module docstring. ``reps`` None: copy the file as it is."""
    shown = os.path.join(shown_dir, name)
    tmp = ajournal.temp_name(name)
    _unlink_quietly(dir_fd, tmp)
    _check_space(dir_fd, shown_dir, scan)
    tfd = create_temp(dir_fd, tmp, shown, "the archive's directory")
    try:
        try:
            if reps is None:
                copy_whole(src_fd, scan, tfd)
            else:
                write_fixed(src_fd, scan, reps, tfd)
            st = scan.st
            if in_place:
                tst = os.fstat(tfd)
                if (tst.st_uid, tst.st_gid) != (st.st_uid, st.st_gid):
                    os.fchown(tfd, st.st_uid, st.st_gid)
            # The archive holds a process's memory: never wider than the original's mode.
            os.fchmod(tfd, st.st_mode & 0o7777)
            os.fsync(tfd)
            new = FileId.of(os.fstat(tfd))
        except OSError as err:
            raise ImageError(
                f"cannot write the fixed archive: {err.strerror}; nothing was changed",
                path=shown,
                errno=err.errno,
            ) from err
        finally:
            os.close(tfd)
        if FileId.of(os.fstat(src_fd)) != FileId.of(scan.st) or (
            in_place and _file_id(dir_fd, name, shown) != FileId.of(scan.st)
        ):
            raise ImageError(
                "changed while criu-aio was rewriting it; nothing was modified",
                path=scan.path,
                errno=_errno.EBUSY,
                hint="run again once nothing else writes the archive",
            )
        if jr is not None:
            jr.pending = Pending(
                os.urandom(16).hex(),
                action,
                tmp,
                FileId.of(scan.st) if in_place else _file_id(dir_fd, name, shown),
                new,
                before.to_json() if before is not None else None,
            )
            ajournal.store(dir_fd, shown_dir, jr)
    except BaseException:
        _unlink_quietly(dir_fd, tmp)
        raise
    # From here on the journal lets the next run roll forward or back: no cleanup.
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as err:
        raise ImageError(
            f"cannot replace it: {err.strerror}",
            path=shown,
            errno=err.errno,
            hint="run the same command again: it completes or undoes the interrupted run",
        ) from err
    if jr is not None:
        jr.pending = None
        ajournal.store(dir_fd, shown_dir, jr)


def _open_source(path: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        return fd, os.fstat(fd)
    except OSError as err:
        raise ImageError(f"cannot open: {err.strerror}", path=path, errno=err.errno) from err


def _refuse_link(path: str) -> None:
    if os.path.islink(path):
        raise ImageError(
            "is a symbolic link; an in-place fix would replace the link, not the archive",
            path=path,
            hint="give the archive itself, or write the fixed one elsewhere with --output",
        )


# --- fix ---------------------------------------------------------------------------------


@dataclass
class _Run:
    """One fix or revert: where from, where to, what recovery did; makes its result."""

    action: str
    target: str
    source: str
    recovered: tuple[str, ...] = ()

    def result(
        self,
        cp: ArchiveCheckpoint,
        changes: Sequence[RingChange] = (),
        files: Sequence[str] = (),
        *,
        written: bool = False,
        journal: bool = False,
    ) -> ArchiveApplied:
        shown_dir, name = _split(self.target)
        return ArchiveApplied(
            ApplyResult(self.action, tuple(changes), tuple(files), written, self.recovered),
            self.target,
            self.source,
            cp.compression,
            os.path.join(shown_dir, ajournal.journal_name(name)) if journal else None,
        )

    def log_changes(self, log: Log, changes: Sequence[RingChange]) -> None:
        for c in changes:
            log(
                f"{self.target}: {c.file}: ring {c.ring_id:#x} "
                f"nr_req {c.old_nr_req} -> {c.new_nr_req}"
            )


def fix_archive(
    path: str | os.PathLike[str],
    new_nr_req: Mapping[tuple[str, int], int],
    *,
    output: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    host: HostFacts | None = None,
    kernel_name: str = "",
    log: Log = _no_log,
    limits: Limits = DEFAULT_LIMITS,
    expect: FileId | None = None,
) -> ArchiveApplied:
    """Set nr_req of the rings named ``(mm image file name, ring address)`` in an archive.

    In place (atomically, journaled beside it) or, with ``output``, into a new
    archive. Rings already at their value are left alone; with nothing to
    change an in-place run writes nothing (``--output`` still writes the copy).
    ``expect``: the archive as the caller judged it (``FileId.of`` its stat);
    a different file there now is refused (EBUSY), nothing written.
    """
    source = os.fspath(path)
    target = source if output is None else os.fspath(output)
    in_place = output is None or (os.path.exists(target) and os.path.samefile(source, target))
    run = _Run("fix", source if in_place else target, source)
    if dry_run:
        cp = read_archive(source, limits)
        changes, updates = plan_changes(_images(cp), new_nr_req)
        return run.result(cp, changes, [u.image.name for u in updates])
    if in_place:
        _refuse_link(source)
    shown_dir, name = _split(run.target)
    with _directory(shown_dir, lock=True) as dir_fd:
        run.recovered = recover(dir_fd, shown_dir, name, log)
        if not in_place and _file_id(dir_fd, name, run.target) is not None:
            raise ImageError(
                "exists; criu-aio writes --output to a new file only",
                path=run.target,
                errno=_errno.EEXIST,
                hint="remove it (and its .criu-aio.journal) or choose another name",
            )
        src_fd, st = _open_source(source)
        try:
            if expect is not None and FileId.of(st) != expect:
                raise ImageError(
                    "changed since it was judged; nothing was written",
                    path=source,
                    errno=_errno.EBUSY,
                    hint="run again once nothing else writes the archive",
                )
            scan = scan_fd(src_fd, st, source, limits)
            cp = checkpoint_of(scan)
            images = _images(cp)
            changes, updates = plan_changes(images, new_nr_req)
            if in_place:
                previous = ajournal.load(dir_fd, shown_dir, name)
            else:
                src_dir, src_name = _split(source)
                with _directory(src_dir, lock=False) as src_dir_fd:
                    previous = ajournal.load(src_dir_fd, src_dir, src_name)
            originals = _current_originals(previous, images)
            if not updates and in_place:
                return run.result(cp)
            if not updates:  # --output: the archive as it is (and its journal's originals)
                jr = _next_journal(name, cp, previous, originals, _record("copy", []))
                jr_or_none = jr if originals else None
                _commit(
                    dir_fd, shown_dir, name, src_fd, scan, None, jr_or_none, None, "copy", False
                )
                return run.result(cp, written=True, journal=jr_or_none is not None)
            for u in updates:
                old_sha = sha256(u.image.data)
                known = originals.get(u.image.name)
                if known is None:
                    known = FileOriginal(old_sha, old_sha, u.originals)
                originals[u.image.name] = FileOriginal(known.sha256, sha256(u.new), known.rings)
            record = _record("fix", changes, host=host, kernel=kernel_name, source=source)
            jr = _next_journal(name, cp, previous, originals, record)
            before = previous if in_place else ajournal.load(dir_fd, shown_dir, name)
            reps = _replacements(cp, [(u.image, u.new) for u in updates])
            _commit(dir_fd, shown_dir, name, src_fd, scan, reps, jr, before, "fix", in_place)
        finally:
            os.close(src_fd)
    run.log_changes(log, changes)
    files = [u.image.name for u in updates]
    return run.result(cp, changes, files, written=True, journal=True)


def _record(
    action: str,
    changes: Sequence[RingChange],
    *,
    host: HostFacts | None = None,
    kernel: str = "",
    source: str = "",
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "action": action,
        "time": _now(),
        "changes": [c.as_dict() for c in changes],
    }
    if action == "fix":
        record["kernel"] = kernel
        record["host"] = host.as_dict() if host is not None else None
        record["source"] = source
    return record


# --- revert ------------------------------------------------------------------------------


def _reverted(
    jr: ArchiveJournal, cp: ArchiveCheckpoint, journal_name: str
) -> tuple[list[RingChange], list[tuple[MmImage, bytes]]]:
    """The ring changes and mm images that put back what the journal recorded."""
    images = _images(cp)
    changes: list[RingChange] = []
    new_images: list[tuple[MmImage, bytes]] = []
    for file, orig in sorted(jr.originals.items()):
        image = images.get(file)
        if image is None or sha256(image.data) != orig.current_sha256:
            raise ImageError(
                "changed since criu-aio rewrote it (a new export?); not reverting anything",
                path=image.path if image else f"{cp.path}:{cp.images_prefix}{file}",
                hint=f"if the archive is new, remove {journal_name}",
            )
        new = splice.splice(image.data, image.path, dict(orig.rings))
        if sha256(new) != orig.sha256:
            raise ImageError("cannot rebuild the original bytes", path=image.path)
        restored = {r.ring_id: r.nr_req for r in parse_mm(new, image.path, image.pid)}
        for ring in image.rings:
            back = restored[ring.ring_id]
            if ring.ring_id in orig.rings and ring.nr_req != back:
                changes.append(RingChange(file, ring.ring_id, ring.ring_len, ring.nr_req, back))
        new_images.append((image, new))
    return changes, new_images


def revert_archive(
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    log: Log = _no_log,
    limits: Limits = DEFAULT_LIMITS,
) -> ArchiveApplied:
    """Put back, byte for byte, every mm image criu-aio changed in the archive.

    Refuses (nothing written) when an image changed since criu-aio wrote it;
    reverting twice is a no-op.
    """
    source = os.fspath(path)
    run = _Run("revert", source, source)
    if not dry_run:
        _refuse_link(source)
    shown_dir, name = _split(source)
    with _directory(shown_dir, lock=not dry_run) as dir_fd:
        if not dry_run:
            run.recovered = recover(dir_fd, shown_dir, name, log)
        jr = ajournal.load(dir_fd, shown_dir, name)
        src_fd, st = _open_source(source)
        try:
            scan = scan_fd(src_fd, st, source, limits)
            cp = checkpoint_of(scan)
            if jr is None or not jr.originals:
                return run.result(cp)
            changes, new_images = _reverted(jr, cp, ajournal.journal_name(name))
            files = [image.name for image, _ in new_images]
            if dry_run:
                return run.result(cp, changes, files)
            new_jr = _next_journal(name, cp, jr, {}, _record("revert", changes))
            reps = _replacements(cp, new_images)
            _commit(dir_fd, shown_dir, name, src_fd, scan, reps, new_jr, jr, "revert", True)
        finally:
            os.close(src_fd)
    run.log_changes(log, changes)
    return run.result(cp, changes, files, written=True, journal=True)
