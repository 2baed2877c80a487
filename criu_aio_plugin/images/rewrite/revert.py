"""Put back every ring criu-aio changed, byte for byte, from the journal.

The journal keeps, per file, the exact bytes of every ring's submessage
before criu-aio first changed it, and the digests of the original and of
what criu-aio last wrote; a revert splices the old submessages back, proves
the result is the original file by its digest, and commits it like a fix.
"""

from __future__ import annotations

from criu_aio_plugin.errors import ImageError
from criu_aio_plugin.images import journal, splice
from criu_aio_plugin.images.mm import open_images_dir
from criu_aio_plugin.images.rewrite.atomic import sha256
from criu_aio_plugin.images.rewrite.lock import ImagesDir, locked_dir
from criu_aio_plugin.images.rewrite.recovery import no_log, recover
from criu_aio_plugin.images.rewrite.transaction import (
    ApplyResult,
    RingChange,
    Update,
    commit,
    now,
    read_named,
)
from criu_aio_plugin.images.rewrite.verify import read_back

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.rewrite.recovery import Log


def revert(images_dir: ImagesDir, *, dry_run: bool = False, log: Log = no_log) -> ApplyResult:
    """Put back every ring criu-aio changed, byte for byte, from the journal.

    Refuses (``ImageError``, nothing written) when an image changed since
    criu-aio last wrote it. Reverting twice is a no-op.
    """
    ctx = open_images_dir(images_dir) if dry_run else locked_dir(images_dir)
    with ctx as (dir_fd, shown):
        recovered = () if dry_run else recover(dir_fd, shown, log)
        jr = journal.load(dir_fd, shown)
        images = read_named(dir_fd, shown, set(jr.originals))
        changes: list[RingChange] = []
        updates: list[Update] = []
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
            updates.append(Update(image, new, dict(orig.rings), {}))
        files = tuple(u.image.name for u in updates)
        if dry_run or not updates:
            return ApplyResult("revert", tuple(changes), files, False, recovered)
        jr.originals = {}
        record = {
            "action": "revert",
            "time": now(),
            "changes": [c.as_dict() for c in changes],
        }
        commit(dir_fd, shown, jr, updates, "revert", record)
        for c in changes:
            log(f"{c.file}: ring {c.ring_id:#x} nr_req {c.old_nr_req} -> {c.new_nr_req} (revert)")
        return ApplyResult("revert", tuple(changes), files, True, recovered)
