"""Judge a checkpoint's images directory and carry the decision out.

A ``Session`` opens the directory (for a writer: under the rewrite's flock,
after finishing any interrupted criu-aio run), reads every mm image once, and
``examine`` judges the rings on a kernel, decides (``decide``) and, when the
decision says so, rewrites nr_req through the transactional rewrite, in the
same lock and from the same bytes it judged. Every entry point that looks at
an images directory uses it: the RPC RESTORE and ``criu-aio restore`` with
intent RESTORE, ``fix`` with FIX, the reports with REPORT.

Lean core: on the restore path (no contextlib: the session is a small class).
"""

from __future__ import annotations

from criu_aio_plugin.decision.decide import REPORT, Decision, decide
from criu_aio_plugin.decision.judge import judge
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from criu_aio_plugin.decision.model import Judgement
    from criu_aio_plugin.estimator.model import ModelStore
    from criu_aio_plugin.images.mm import ImageRing, MmImage
    from criu_aio_plugin.images.rewrite import ApplyResult, RingChange
    from criu_aio_plugin.kernel.interface import Kernel

    Log = Callable[[str], None]


def _no_log(_: str) -> None:
    pass


class Outcome(Value):
    """A judged checkpoint, the decision, and what was (or would be) changed.

    ``changes`` are the rings whose nr_req the decision's rewrites change (made
    when ``written``, else what a run allowed to write would make);
    ``recovered`` says what finishing an interrupted run did; ``pending`` that
    an interrupted run is pending (seen by a read-only session, which leaves it
    to the next writer).
    """

    judgement: Judgement
    decision: Decision
    changes: tuple[RingChange, ...] = ()
    written: bool = False
    recovered: tuple[str, ...] = ()
    pending: bool = False
    files: tuple[str, ...] = ()


def _needs_recovery(dir_fd: int, shown: str) -> bool:
    """An interrupted run (a pending journal) or stale temporary files to clean up.

    Asked before every restore: a stat and a listing, the journal module only
    when there is a journal.
    """
    import os

    from criu_aio_plugin.images import JOURNAL_NAME, TMP_PREFIX

    try:
        names = os.listdir(dir_fd)
    except OSError:
        return True  # let recover() report it
    if any(name.startswith(TMP_PREFIX) for name in names):
        return True
    if JOURNAL_NAME not in names:
        return False
    from criu_aio_plugin.images import journal

    return journal.load(dir_fd, shown).pending is not None


class Session:
    """``with Session(path or dir fd, write=...) as cp:`` then ``cp.rings``, ``cp.examine``."""

    def __init__(
        self,
        images_dir: str | os.PathLike[str] | int,
        *,
        write: bool,
        log: Log = _no_log,
    ) -> None:
        self._images_dir = images_dir
        self._write = write
        self._log = log
        self._ctx: AbstractContextManager[tuple[int, str]] | None = None
        self.dir_fd = -1
        self.shown = ""
        self.images: list[MmImage] = []
        self.recovered: tuple[str, ...] = ()

    def __enter__(self) -> Session:
        from criu_aio_plugin.images.mm import locked_images_dir, open_images_dir, read_mm_images

        ctx: AbstractContextManager[tuple[int, str]]
        if self._write:
            ctx = locked_images_dir(self._images_dir)
        else:
            ctx = open_images_dir(self._images_dir)
        self.dir_fd, self.shown = ctx.__enter__()
        self._ctx = ctx
        try:
            if self._write and _needs_recovery(self.dir_fd, self.shown):
                # Only now the rewrite machinery: a restore whose rings are fine
                # (the common case) never imports it.
                from criu_aio_plugin.images.rewrite import recover

                self.recovered = recover(self.dir_fd, self.shown, self._log)
            self.images = read_mm_images(self.dir_fd)
        except BaseException as err:
            ctx.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        ctx = self._ctx
        self._ctx = None
        if ctx is not None:
            ctx.__exit__(*exc)  # type: ignore[arg-type]

    @property
    def interrupted(self) -> bool:
        """An earlier criu-aio run on these images was interrupted (a writer finishes it)."""
        return bool(self.recovered) or _needs_recovery(self.dir_fd, self.shown)

    @property
    def rings(self) -> list[ImageRing]:
        return [ring for image in self.images for ring in image.rings]

    def judge(self, kernel: Kernel, *, store: ModelStore | None = None) -> Judgement:
        return judge(kernel, self.rings, self.shown, store=store)

    def examine(
        self,
        kernel: Kernel,
        *,
        intent: str = REPORT,
        store: ModelStore | None = None,
        changes: bool | None = None,
    ) -> Outcome:
        """Judge on *kernel*, decide for *intent*, and write when the decision says so.

        ``changes``: also work out the new images of a report (``fix
        --dry-run``); by default only a run that may write does. A report that
        needs only the verdict (inspect, check) then reads and judges, nothing
        more: building and verifying a thousand new images costs more than
        judging them.
        """
        judgement = self.judge(kernel, store=store)
        decision = decide(judgement, intent)
        wanted = intent != REPORT if changes is None else changes
        return self.carry_out(judgement, decision, kernel_name=kernel.name, changes=wanted)

    def carry_out(
        self,
        judgement: Judgement,
        decision: Decision,
        kernel_name: str = "",
        *,
        changes: bool = True,
    ) -> Outcome:
        """Compute (and when ``decision.write``, make) the decision's rewrites."""
        from criu_aio_plugin.images.rewrite import apply_fix_locked

        applied: ApplyResult | None = None
        if decision.rewrites and (changes or decision.write):
            if decision.write and not self._write:
                raise RuntimeError("a read-only session cannot write")  # a caller's bug
            applied = apply_fix_locked(
                self.dir_fd,
                self.shown,
                decision.rewrite_map,
                dry_run=not decision.write,
                host=judgement.host,
                kernel_name=kernel_name,
                log=self._log,
                recovered=self.recovered,
                images={image.name: image for image in self.images},
            )
        pending = False
        if not self._write:
            from criu_aio_plugin.images import journal

            pending = journal.load(self.dir_fd, self.shown).pending is not None
        return Outcome(
            judgement=judgement,
            decision=decision,
            changes=applied.changes if applied is not None else (),
            written=bool(applied and applied.written),
            recovered=self.recovered,
            pending=pending,
            files=applied.files if applied is not None else (),
        )
