"""Finding a request's images the way CRIU will, and touching them as the peer.

CRIU resolves ``images_dir_fd`` as ``/proc/<peer pid>/fd/<N>`` with the pid from
SO_PEERCRED, and ``images_dir`` as a path relative to its own working directory
(criu/cr-service.c resolve_images_dir_path). After our exec CRIU is this very
process, so in swrk mode "its working directory" is ours. The service runs the
worker in the client's working directory (/proc/<peer>/cwd, see
``peer_files.open_peer_cwd``) so that a relative ``images_dir`` means what the
client meant.

The service runs as root for clients that are not: ``acting_as`` switches the
effective uid, gid and groups to the peer's (SO_PEERCRED, SO_PEERGROUPS) for the
duration of the image work, so the kernel itself refuses to read or rewrite
what the peer could not; the saved uid stays 0 so root comes back afterwards.
The images are then reached only through the directory descriptor opened here
(``/proc/self/fd/N``), and the image module opens files in it without
following symlinks.
"""

from __future__ import annotations

import os

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.rpc.protocol import ImagesAt
from criu_aio_plugin.rpc.transport import PeerCred

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_images_dir(at: ImagesAt, peer: PeerCred) -> int:
    """An O_CLOEXEC descriptor of the request's images directory.

    A relative ``images_dir`` is resolved against our working directory, which
    is CRIU's after the exec (the service moves its worker to the client's).
    """
    if at.peer_fd is not None:
        path = f"/proc/{peer.pid}/fd/{at.peer_fd}"
        shown = f"images_dir_fd {at.peer_fd} of pid {peer.pid} ({path})"
    else:
        assert at.path is not None
        path = at.path
        shown = f"images_dir {path!r}"
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as err:
        raise ClientError(
            f"cannot open the {shown}: {err.strerror}",
            errno=err.errno,
            hint="pass an images directory the client itself can open",
        ) from err


def fd_path(fd: int) -> str:
    """A path that names the directory open as *fd* (for display and path-based APIs)."""
    return f"/proc/self/fd/{fd}"


def shown_path(fd: int) -> str:
    """The directory's real path, for messages."""
    try:
        return os.readlink(fd_path(fd))
    except OSError:
        return fd_path(fd)


class _ActingAs:
    """``acting_as``'s context manager (a class: contextlib is not lean)."""

    __slots__ = ("_peer", "_saved")

    def __init__(self, peer: PeerCred, enabled: bool) -> None:
        self._peer = peer if enabled else None
        self._saved: tuple[list[int], int] | None = None

    def __enter__(self) -> None:
        peer = self._peer
        if peer is None or os.geteuid() != 0 or peer.uid == 0:
            return
        saved = (os.getgroups(), os.getegid())
        os.setgroups(list(peer.groups))
        os.setegid(peer.gid)
        os.seteuid(peer.uid)
        self._saved = saved

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            groups, egid = self._saved
            self._saved = None
            os.seteuid(0)
            os.setegid(egid)
            os.setgroups(groups)


def acting_as(peer: PeerCred, *, enabled: bool = True) -> _ActingAs:
    """Run the body with the peer's effective uid, gid and groups (no-op unless root).

    Only the effective ids change (the saved uid stays 0), and only in a
    single-threaded process: setgroups/seteuid apply to the calling process.
    ``enabled=False`` makes it a no-op (swrk mode: we already are the peer).
    """
    return _ActingAs(peer, enabled)
