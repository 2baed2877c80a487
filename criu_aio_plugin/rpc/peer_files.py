"""Paths a client names, opened with the client's rights and without surprises.

``criu-aio service`` runs as root for clients that are not. Whatever a request
names (its ``config_file``, its images folder and the images in it, the
client's working directory that a relative path starts from) is opened here
only:

- with the client's credentials: the caller is inside
  ``images_access.acting_as(peer)``, so the kernel refuses what the client
  could not open itself, and every answer depends only on what the client can
  see: a file under a 0700 root folder is EACCES to it whether the file exists
  or not, and whatever it holds (no oracle on root-only files);
- without blocking: a FIFO (whose open() waits for a writer), a device (whose
  open can have side effects) or a socket is recognised by stat() before any
  open and refused; the open itself is O_NONBLOCK|O_NOCTTY and its descriptor
  is checked again (the path may have been swapped in between);
- within a size cap.

CRIU follows symlinks in these paths (fopen of the config file,
criu/config.c parse_config; open of the images folder), so they are followed
here too, with the client's rights. CRIU 4.1.1 reads the config file as root
(criu/cr-service.c setup_opts_from_req: no uid change before
parse_options); the service reads it as the client instead, and refuses one
the client cannot read, so a root-only file never decides what criu-aio (or
the CRIU it starts for that client) does.

In ``swrk`` mode we already are the client (and CRIU will be too): nothing
is refused here, a config file we cannot read is only "unknown", and the
request goes to CRIU, which decides as it always does.
"""

from __future__ import annotations

import errno as _errno
import os
import stat

from criu_aio_plugin.errors import ClientError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.rpc.transport import PeerCred

CONFIG_LIMIT = 1 << 20  # CRIU config files are a few lines; runc's is empty or absent
MAX_IMAGES_DIR_ENTRIES = 1 << 17  # a checkpoint has ~10 files per task
_SO_PEERPIDFD = 77  # Linux >= 6.5
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CWD_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def kind(mode: int) -> str:
    """What a stat mode names, in words (only for refusals: imports the image module)."""
    from criu_aio_plugin.images.mm import file_kind

    return file_kind(mode)


def read_regular(path: str, *, what: str, limit: int) -> bytes:
    """The content of the regular file *path* (symlinks followed), at most *limit* bytes.

    Raises ClientError (errno kept) for anything else: missing, not allowed,
    not a regular file, larger than *limit*. Never blocks on a FIFO or opens a
    device: stat() decides before open().
    """
    shown = f"{what} {path!r}"
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            raise ClientError(
                f"{shown} is {kind(before.st_mode)}, not a regular file", errno=_errno.EINVAL
            )
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        raise ClientError(f"cannot open {shown}: {err.strerror}", errno=err.errno) from err
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(st.st_mode):
            raise ClientError(f"{shown} changed while being opened", errno=_errno.EAGAIN)
        if st.st_size > limit:
            raise ClientError(
                f"{shown} holds {st.st_size} bytes, more than the {limit} allowed",
                errno=_errno.EFBIG,
            )
        data = os.read(fd, limit + 1)
    except OSError as err:
        raise ClientError(f"cannot read {shown}: {err.strerror}", errno=err.errno) from err
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ClientError(f"{shown} grew past {limit} bytes", errno=_errno.EFBIG)
    return data


def config_sets_images_dir(path: str | None, *, strict: bool) -> bool:
    """Whether the RPC config file *path* sets images-dir, read as the caller is now.

    CRIU config files hold one option per line, with or without leading
    dashes (``images-dir /x``, ``--images-dir=/x``, ``-D /x``); # starts a
    comment. A missing file sets nothing (CRIU ignores it too). Anything else
    that stops us from reading it: *strict* (the service) raises ClientError;
    otherwise (swrk) it counts as setting it, we cannot know, CRIU decides.
    """
    if not path:
        return False
    try:
        data = read_regular(path, what="config_file", limit=CONFIG_LIMIT)
    except ClientError as err:
        if err.errno == _errno.ENOENT:
            return False
        if strict:
            raise
        return True
    for line in data.decode("utf-8", "replace").splitlines():
        word = line.split("#", 1)[0].strip().lstrip("-").split("=", 1)[0].split(None, 1)
        if word and word[0] in ("images-dir", "D"):
            return True
    return False


def screen_images_dir(dir_fd: int) -> None:
    """Refuse an images folder holding an image that is not a regular file.

    The service hands the folder to CRIU, which runs as root and opens its
    images following symlinks and blocking (criu/image.c open_image_at): an
    ``*.img`` that is a FIFO would hold a root CRIU forever, a symlink would
    have it read what the client may not. A real checkpoint holds regular files.
    """
    count = 0
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                count += 1
                if count > MAX_IMAGES_DIR_ENTRIES:
                    raise ClientError(
                        f"the images folder holds more than {MAX_IMAGES_DIR_ENTRIES} entries",
                        errno=_errno.EFBIG,
                    )
                if not entry.name.endswith(".img"):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    raise ClientError(
                        f"image {entry.name!r} is {kind(st.st_mode)}; the service takes only "
                        "regular image files (CRIU would open it as root)",
                        errno=_errno.EINVAL,
                    )
    except OSError as err:
        raise ClientError(
            f"cannot list the images folder: {err.strerror}", errno=err.errno
        ) from err


def peer_pidfd(conn_fd: int, pid: int) -> int | None:
    """A pidfd of the connection's peer process (SO_PEERPIDFD), or None (kernel < 6.5).

    It names the very process that connected, even after its pid is reused.
    Raises ClientError when that process is gone already.
    """
    import _socket
    import struct

    sock = _socket.socket(fileno=conn_fd)
    try:
        raw = sock.getsockopt(_socket.SOL_SOCKET, _SO_PEERPIDFD, 4)
    except OSError as err:
        if err.errno == _errno.ESRCH:
            raise ClientError(
                f"the client (pid {pid}) exited before its request was served",
                errno=_errno.ESRCH,
            ) from err
        return None
    finally:
        sock.detach()
    fd: int = struct.unpack("i", raw)[0]
    os.set_inheritable(fd, False)
    return fd


def peer_exited(pidfd: int) -> bool:
    """Whether the process behind *pidfd* has exited (a pidfd polls readable then)."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def open_peer_cwd(conn_fd: int, peer: PeerCred) -> int:
    """An O_PATH descriptor of the client's working directory (called as root).

    /proc/<pid>/cwd names whatever process holds that pid now, which need not
    be the one that connected: it may have exited and its pid been reused. With
    a pidfd of the connecting process (SO_PEERPIDFD) the folder is taken only if
    that very process is alive before and after the open; the open is then
    done as root, so a client whose /proc entries are root's (non-dumpable) or
    whose working folder it may search but not read (0711) is served as
    ``criu service`` would serve it. Without a pidfd (Linux < 6.5) it is opened
    as the client, so at least another user's process behind a reused pid is
    EACCES. O_PATH: only a path to start relative lookups from, which are made
    as the client.
    """
    from criu_aio_plugin.rpc.images_access import acting_as

    def gone() -> ClientError:
        return ClientError(
            f"the client (pid {peer.pid}) exited before its request was served",
            errno=_errno.ESRCH,
        )

    pidfd = peer_pidfd(conn_fd, peer.pid)
    try:
        if pidfd is not None and peer_exited(pidfd):
            raise gone()
        try:
            with acting_as(peer, enabled=pidfd is None):
                fd = os.open(f"/proc/{peer.pid}/cwd", _CWD_FLAGS)
        except OSError as err:
            if err.errno == _errno.ENOENT:
                raise gone() from err
            raise ClientError(
                f"cannot open the working directory of pid {peer.pid}: {err.strerror}",
                errno=err.errno,
            ) from err
        if pidfd is not None and peer_exited(pidfd):
            os.close(fd)
            raise gone()
        return fd
    finally:
        if pidfd is not None:
            os.close(pidfd)
