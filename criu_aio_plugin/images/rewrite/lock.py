"""Step 1 of a transaction: the images directory's exclusive lock."""

from __future__ import annotations

# fcntl up front: whoever imports the rewrite may give up the rights to read
# this Python's files before it locks (the service acting as its client).
import fcntl  # noqa: F401
import os

from criu_aio_plugin.images.mm import locked_images_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

ImagesDir = str | os.PathLike[str] | int


def locked_dir(images_dir: ImagesDir) -> AbstractContextManager[tuple[int, str]]:
    """Open the images directory (a path or a borrowed fd) and hold its exclusive flock
    (``mm.locked_images_dir``)."""
    return locked_images_dir(images_dir)
