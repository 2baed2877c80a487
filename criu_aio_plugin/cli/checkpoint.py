"""What the checkpoint commands (inspect, check, fix, can-restore) share: opening one.

A checkpoint is an images directory or an archive (a podman export, a
kubelet checkpoint archive): a regular file is read as an archive, its
format told by its content (``images.archive``).
"""

from __future__ import annotations

import os

from criu_aio_plugin.decision.checkpoint import Session
from criu_aio_plugin.errors import ImageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

CHECKPOINT_METAVAR = "DIR|ARCHIVE"


def _no_log(_: str) -> None:
    pass


def is_archive(path: str) -> bool:
    """A regular file (not a directory): read it as an archive, its content telling
    which kind (a file that is none is then reported as such). Only os and stat:
    a directory's commands import nothing of the archive code."""
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_checkpoint(
    path: str,
    *,
    write: bool,
    output: str | None = None,
    log: Callable[[str], None] = _no_log,
) -> Session:
    """A ``Session`` on the images directory or archive at ``path``."""
    if is_archive(path):
        from criu_aio_plugin.decision.archive import ArchiveSession

        return ArchiveSession(path, write=write, output=output, log=log)
    if output is not None:
        raise ImageError(
            "--output is for checkpoint archives; an images directory is fixed in place",
            path=path,
        )
    return Session(path, write=write, log=log)


def require_mm_images(cp: Session) -> None:
    """Refuse a directory without any mm-<pid>.img: most likely the wrong one."""
    if not cp.images:
        raise ImageError(
            "no mm-<pid>.img in this directory",
            path=cp.shown,
            hint="give the directory `criu dump -D` wrote the checkpoint to",
        )
