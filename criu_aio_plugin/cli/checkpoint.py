"""What the checkpoint commands (inspect, check, fix, can-restore) share: opening one."""

from __future__ import annotations

from criu_aio_plugin.decision.checkpoint import Session
from criu_aio_plugin.errors import ImageError


def require_mm_images(cp: Session) -> None:
    """Refuse a directory without any mm-<pid>.img: most likely the wrong one."""
    if not cp.images:
        raise ImageError(
            "no mm-<pid>.img in this directory",
            path=cp.shown,
            hint="give the directory `criu dump -D` wrote the checkpoint to",
        )
