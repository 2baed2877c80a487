"""Judge a checkpoint archive and carry the decision out: ``Session`` for archives.

``ArchiveSession`` is a ``Session`` whose rings come from a podman export or
a kubelet checkpoint archive (``images.archive``): the same ``judge``,
``decide`` and ``Outcome``, so inspect, check, can-restore and fix give an
archive exactly the verdict they give its extracted directory. What differs
is carrying a rewrite out: ``fix_archive`` writes the whole archive again
(in place, atomically, or to ``output``), refusing if the archive is no
longer the file that was judged.

Not on the restore path: CRIU restores from a directory, never an archive.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from criu_aio_plugin.decision.checkpoint import Outcome, Session
from criu_aio_plugin.decision.decide import Decision
from criu_aio_plugin.decision.model import Judgement
from criu_aio_plugin.images.archive.read import ArchiveCheckpoint, read_archive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.archive.metadata import ContainerInfo
    from criu_aio_plugin.images.archive.transaction import ArchiveApplied
    from criu_aio_plugin.images.rewrite import RingChange

Log = Callable[[str], None]


def _no_log(_: str) -> None:
    pass


class ArchiveSession(Session):
    """``with ArchiveSession(path, write=..., output=None) as cp:`` like ``Session``.

    A writer first finishes or rolls back an interrupted run on the archive
    (and on ``output``), then reads it; ``archive`` is what was read,
    ``applied`` what ``carry_out`` wrote (None when it wrote nothing).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        write: bool,
        output: str | os.PathLike[str] | None = None,
        log: Log = _no_log,
    ) -> None:
        super().__init__(path, write=write, log=log)
        self.path = os.fspath(path)
        self.output = os.fspath(output) if output is not None else None
        self.archive: ArchiveCheckpoint | None = None
        self.applied: ArchiveApplied | None = None

    def __enter__(self) -> ArchiveSession:
        if self._write:
            from criu_aio_plugin.images.archive.transaction import recover_archive

            self.recovered = recover_archive(self.path, self._log)
            if self.output is not None and os.path.exists(os.path.dirname(self.output) or "."):
                self.recovered += recover_archive(self.output, self._log)
        self.archive = read_archive(self.path)
        self.shown = self.path
        self.images = list(self.archive.mm_images)
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @property
    def container(self) -> ContainerInfo | None:
        return self.archive.container if self.archive is not None else None

    def carry_out(
        self,
        judgement: Judgement,
        decision: Decision,
        kernel_name: str = "",
        *,
        changes: bool = True,
    ) -> Outcome:
        """Compute (and when ``decision.write``, make) the rewrites in the archive.

        With ``output`` a writer also writes the archive as it is when nothing
        needs a rewrite and the checkpoint restores here, so that
        ``fix A --output B && <restore B>`` always finds B.
        """
        assert self.archive is not None, "carry_out outside the with block"
        made: tuple[RingChange, ...] = ()
        files: tuple[str, ...] = ()
        written = False
        copy_as_is = (
            self.output is not None
            and self._write
            and not decision.rewrites
            and decision.status.restorable
        )
        if decision.write or copy_as_is:
            from criu_aio_plugin.images.archive.journal import FileId
            from criu_aio_plugin.images.archive.transaction import fix_archive

            if not self._write:
                raise RuntimeError("a read-only session cannot write")  # a caller's bug
            self.applied = fix_archive(
                self.path,
                decision.rewrite_map,
                output=self.output,
                host=judgement.host,
                kernel_name=kernel_name,
                log=self._log,
                expect=FileId.of(self.archive.scan.st),
            )
            made, files = self.applied.result.changes, self.applied.result.files
            written = self.applied.written
            self.recovered += self.applied.result.recovered
        elif decision.rewrites and changes:
            from criu_aio_plugin.images.rewrite import plan_changes

            images = {image.name: image for image in self.images}
            planned, updates = plan_changes(images, decision.rewrite_map)
            made, files = tuple(planned), tuple(u.image.name for u in updates)
        return Outcome(
            judgement=judgement,
            decision=decision,
            changes=made,
            written=written and bool(made),
            recovered=self.recovered,
            pending=not self._write and _pending(self.path),
            files=files,
        )


def _pending(path: str) -> bool:
    from criu_aio_plugin.images.archive.journal import pending

    return pending(path)
