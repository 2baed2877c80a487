"""``criu-aio service``: a ``criu service``-style socket whose clients get the AIO work.

How it works. The service listens on an AF_UNIX SOCK_SEQPACKET socket, its own
(``--address PATH``, ``--socket-mode``, 0600 by default) or one systemd passes
(socket activation: LISTEN_PID/LISTEN_FDS, descriptor 3). CRIU 4.1.1's own
``criu service`` makes its socket 0666; upstream CRIU moved to 0600, because
whoever can have a root CRIU restore images they wrote can run code as any
user. Clients that may connect may still be hostile, so no client may stall,
trick or starve the service:

- ``service_loop``: the accept loop is never blocked. A connection costs one
  descriptor until its first request arrives (at most ``--request-timeout``
  seconds), and only then gets a worker; per-uid and service-wide limits
  (``admission``) keep one user's idle or stuck connections from taking what
  another user needs;
- ``service_worker``: the forked worker does the AIO work as the client, with
  a deadline (``--work-timeout``), then execs ``criu swrk <conn fd>`` so the
  real CRIU serves the connection, as a worker of ``criu service`` would.

The command line (``criu-aio service``) is ``criu_aio_plugin.cli.service``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import transport
from criu_aio_plugin.rpc.admission import Limits
from criu_aio_plugin.rpc.service_loop import Loop, fd_budget

SD_LISTEN_FDS_START = 3
DEFAULT_MAX_REQUEST = 64 * 1024  # CRIU's requests are a few hundred bytes
LISTEN_BACKLOG = 128  # the loop accepts at once; the backlog only absorbs bursts


def systemd_socket(environ: dict[str, str] | None = None) -> int | None:
    """The listening socket systemd passed (sd_listen_fds), or None.

    The variables are removed, as sd_listen_fds(1) does, so that no CRIU worker
    mistakes them for its own.
    """
    env = os.environ if environ is None else environ
    pid, fds = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if pid is None or fds is None:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not pid.isdigit() or int(pid) != os.getpid():
        return None
    if fds != "1":
        raise ClientError(f"systemd passed {fds} sockets; criu-aio service takes exactly one")
    fd = SD_LISTEN_FDS_START
    transport.check_seqpacket(fd)
    os.set_inheritable(fd, False)
    return fd


def bind_socket(address: str, mode: int = 0o600) -> socket.socket:
    """Bind and listen on *address* like ``criu service`` (stale socket removed), chmod *mode*."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        sock.bind(address)
        os.chmod(address, mode)
        sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        raise ClientError(f"cannot listen on {address}: {err.strerror}", errno=err.errno) from err
    return sock


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def check_limits(limits: Limits, max_request: int) -> Limits:
    """*limits* made consistent (per-uid at most service-wide); ClientError on nonsense."""
    counts = (
        limits.max_workers,
        limits.max_workers_per_uid,
        limits.max_connections,
        limits.max_connections_per_uid,
    )
    times = (limits.request_timeout, limits.queue_timeout, limits.work_timeout)
    if min(counts) < 1 or min(times) <= 0 or max_request < 16:
        raise ClientError(
            "--max-workers*, --max-connections* must be >= 1, the timeouts > 0 "
            "and --max-request >= 16"
        )
    return limits.replace(
        max_workers_per_uid=min(limits.max_workers_per_uid, limits.max_workers),
        max_connections_per_uid=min(limits.max_connections_per_uid, limits.max_connections),
    )


def run_service(
    log: Log,
    *,
    address: str,
    criu: str | None,
    limits: Limits | None = None,
    max_request: int = DEFAULT_MAX_REQUEST,
    pidfile: str | None = None,
    socket_mode: int = 0o600,
) -> None:
    """Listen (or take systemd's socket) and serve until SIGTERM/SIGINT."""
    from criu_aio_plugin.rpc import aio_work

    limits = check_limits(limits or Limits(), max_request)
    # Fail early (and clearly) when there is no real CRIU to hand over to.
    from criu_aio_plugin.criu_locate import find_criu

    find_criu(criu)
    # Import the AIO work's modules once, here, as root: every worker is forked
    # warm, and acting as its client it may not be able to read our installation.
    aio_work.preload()
    allowed = fd_budget(limits.max_connections + limits.max_workers)
    if allowed < limits.max_connections + limits.max_workers:
        connections = max(1, allowed - limits.max_workers)
        log.warning(
            f"the descriptor limit allows {connections} connections, not "
            f"{limits.max_connections}: --max-connections lowered (raise LimitNOFILE)"
        )
        limits = limits.replace(
            max_connections=connections,
            max_connections_per_uid=min(limits.max_connections_per_uid, connections),
        )
    listener: socket.socket | None = None
    fd = systemd_socket()
    if fd is None:
        listener = bind_socket(address, socket_mode)
        fd = listener.fileno()
        where = address
    else:
        where = f"the socket systemd passed (fd {fd})"
    log.info(
        f"listening on {where}: {limits.max_workers} workers "
        f"({limits.max_workers_per_uid} per uid), {limits.max_connections} connections "
        f"({limits.max_connections_per_uid} per uid), request within "
        f"{limits.request_timeout:g} s, AIO work within {limits.work_timeout:g} s"
    )
    if pidfile:
        with open(pidfile, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
    loop = Loop(fd, log, criu=criu, limits=limits, max_request=max_request)
    signal.signal(signal.SIGTERM, _stop)
    try:
        loop.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(address)
