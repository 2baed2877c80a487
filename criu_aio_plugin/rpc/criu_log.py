"""The log file CRIU would have written for a request: where a refusal's reason goes.

When criu-aio refuses a request (or cannot hand it over) CRIU never starts, so
the log file the client will point its user at stays empty or stale: runc
prints ``criu failed: type RESTORE errno 34`` and the path of its work-path
log, crun ``Please check CRIU logfile .../restore.log``. So the reason is
also written there, where the user looks (besides cr_errmsg and criu-aio's
own log).

Where CRIU writes it (criu/cr-service.c ``setup_opts_from_req``, v4.1.1; the
same for RESTORE and CHECK):

- it chdirs to the work directory: the RPC config file's ``work-dir``, else
  ``/proc/<peer>/fd/<work_dir_fd>``, else ``work-dir`` of its own config files
  (/etc/criu/default.conf, ~/.criu/default.conf, $CRIU_CONFIG_FILE), else the
  images directory (the RPC config file's ``images-dir``, else
  ``/proc/<peer>/fd/<images_dir_fd>``, else ``images_dir``, relative to its
  working directory, which after our exec is ours);
- the file: the RPC config file's ``log-file``, else ``opts.log_file`` (CRIU
  refuses a name holding ``/`` before logging anything), else nothing when
  ``log_to_stderr``, else ``log-file`` of its config files, else ``criu.log``.

The file is written by ``criu_aio_plugin.log.write_criu_log`` (created like
CRIU creates it, never through a symlink, never a FIFO); the caller supplies
the rights (the service acts as its peer, see ``images_access.acting_as``).
"""

from __future__ import annotations

from criu_aio_plugin import criu_options
from criu_aio_plugin.log import write_criu_log
from criu_aio_plugin.rpc.wire import RpcRequest
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

DEFAULT_NAME = "criu.log"  # criu/include/criu-log.h DEFAULT_LOG_FILENAME


class LogPlace(Value):
    """CRIU's log for a request: *name* in the directory *directory* (a path)."""

    directory: str
    name: str


def place(
    req: RpcRequest,
    peer_pid: int,
    criu_conf: Mapping[str, str | None],
    rpc_conf: Mapping[str, str | None],
) -> LogPlace | None:
    """Where CRIU logs *req* (pure; see the module docstring), or None: stderr or nowhere.

    *criu_conf* and *rpc_conf* are the -D/-W/-o values (``criu_options`` identities)
    that CRIU's own config files and the request's config file set.
    """
    work = rpc_conf.get(criu_options.WORK_DIR)
    if not work and req.work_dir_fd is not None:
        work = f"/proc/{peer_pid}/fd/{req.work_dir_fd}"
    if not work:
        work = criu_conf.get(criu_options.WORK_DIR)
    if not work:
        work = rpc_conf.get(criu_options.IMAGES_DIR)
    if not work and req.images_dir_fd != -1:
        work = f"/proc/{peer_pid}/fd/{req.images_dir_fd}"
    if not work:
        work = req.images_dir
    if not work:
        return None  # CRIU answers "Neither images_dir_fd nor images_dir..." without a log
    name = rpc_conf.get(criu_options.LOG_FILE)
    if not name:
        if req.log_file:
            if "/" in req.log_file:
                return None  # "No subdirs are allowed in log_file name": no log at all
            name = req.log_file
        elif req.log_to_stderr:
            return None
        else:
            name = criu_conf.get(criu_options.LOG_FILE) or DEFAULT_NAME
    if name == "-":
        return None
    return LogPlace(work, name)


def criu_config(
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str | None] | None = None,
) -> dict[str, str | None] | None:
    """-D/-W/-o set by CRIU's own config files, as the CRIU we exec reads them (``criu
    swrk N``: /etc/criu/default.conf, ~/.criu/default.conf, $CRIU_CONFIG_FILE), or
    None when CRIU would refuse them (it then reports that itself).

    Read with our own rights: these are CRIU's files, not the peer's (in the
    service, the worker CRIU reads them as root).
    """
    reader = criu_options.read_config_text if read is None else read
    files, _ = criu_options.config_sources(["swrk", "0"], environ)
    values, _, error = criu_options.scan_config_files(files, reader)
    return None if error else values


class Told(Value):
    """Where the reason went: ``path`` written, or ``failed`` saying why not (or neither:
    CRIU would have logged nowhere, to stderr, or not started at all)."""

    path: str = ""
    failed: str = ""

    def note(self) -> str:
        """For the refusal's one log line."""
        if self.path:
            return f" [reason also in CRIU's log {self.path}]"
        if self.failed:
            return f" [CRIU's log not written: {self.failed}]"
        return ""


def tell(
    req: RpcRequest,
    peer_pid: int,
    lines: Sequence[str],
    criu_conf: Mapping[str, str | None],
    read: Callable[[str], str | None] | None = None,
) -> Told:
    """Write *lines* into CRIU's log for *req*, and say where (or why not).

    The request's own config file is read here, with the caller's rights (the
    service calls this acting as its peer). Nothing is logged here: the
    refusal is one event, logged once by the caller with ``Told.note()``.
    """
    rpc_conf: dict[str, str | None] = {}
    if req.config_file:
        reader = criu_options.read_config_text if read is None else read
        rpc_conf, _, error = criu_options.scan_config_files([req.config_file], reader)
        if error:
            return Told()  # CRIU would refuse its config file before logging
    where = place(req, peer_pid, criu_conf, rpc_conf)
    if where is None:
        return Told()
    try:
        return Told(path=write_criu_log(where.directory, where.name, lines))
    except OSError as err:
        return Told(failed=f"{where.directory}/{where.name}: {err.strerror or err}")
