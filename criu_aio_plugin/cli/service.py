"""``criu-aio service``: the command line of the ``criu service``-style socket (``rpc.service``)."""

from __future__ import annotations

import argparse

from criu_aio_plugin import config
from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import service
from criu_aio_plugin.rpc.admission import Limits

_LIMIT_OPTIONS: tuple[tuple[str, type, str], ...] = (
    (
        "--max-workers",
        int,
        "workers at once (a worker serves a connection whose request has arrived: "
        "the AIO work, then CRIU)",
    ),
    (
        "--max-workers-per-uid",
        int,
        "workers one uid may hold at once; root is held only to --max-workers",
    ),
    ("--max-connections", int, "connections held at once, waiting or served; more are refused"),
    (
        "--max-connections-per-uid",
        int,
        "connections one uid may hold at once; root is held only to --max-connections",
    ),
    ("--request-timeout", float, "seconds a connection may wait before sending its request"),
    ("--queue-timeout", float, "seconds a request may wait for a free worker"),
    (
        "--work-timeout",
        float,
        "seconds the AIO work of one request may take before it is refused; "
        "CRIU's own work after the hand-over has no limit",
    ),
)


def _field(flag: str) -> str:
    """The Limits field an option sets (--max-workers -> max_workers)."""
    return flag[2:].replace("-", "_")


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Listen like `criu service` and hand each client to the real CRIU "
            "(`criu swrk <fd>`) after the AIO work: RESTOREs get their rings fixed "
            "for this host, as the client (its uid and groups), or refused with the "
            "reason in cr_errmsg. Under systemd socket activation (LISTEN_FDS) the "
            "passed socket is used and --address is ignored."
        ),
        epilog=exitcodes.epilog(exitcodes.OK, exitcodes.ERROR, exitcodes.USAGE)
        + "\n\nLogs: the `log` setting ($CRIU_AIO_LOG, /etc/criu-aio/config.toml; "
        "default stderr here; syslog, /path, none). `criu-aio config` shows the settings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", default="/run/criu-aio.socket", help="socket path to bind")
    p.add_argument(
        "--socket-mode",
        type=lambda text: int(text, 8),
        default=0o600,
        help="permissions of the socket --address binds, octal (default 0600). Who may "
        "connect may have the root CRIU restore images it wrote, i.e. run code as any "
        "user: give access (0660 and a group) only to users you would give root",
    )
    p.add_argument(
        "--criu", help="the real CRIU (else the criu setting: $CRIU_AIO_CRIU, the config file)"
    )
    defaults = Limits()
    for flag, kind, text in _LIMIT_OPTIONS:
        p.add_argument(
            flag,
            type=kind,
            default=getattr(defaults, _field(flag)),
            help=f"{text} (default %(default)s)",
        )
    p.add_argument(
        "--max-request",
        type=int,
        default=service.DEFAULT_MAX_REQUEST,
        help="largest first request in bytes; larger ones are answered with an error "
        "(default %(default)s)",
    )
    p.add_argument("--pidfile", help="write the service's pid here once it listens")
    return p


def run(argv: list[str], prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    settings = config.current()
    # stderr by default here (a unit's stderr is the journal), else the `log` setting
    default_log = settings.setting("log").source == config.DEFAULT
    log = Log("stderr" if default_log else None, stdio_allowed=True)
    for problem in settings.problems:
        log.warning(f"config: {problem}")
    limits = Limits(**{_field(flag): getattr(args, _field(flag)) for flag, _, _ in _LIMIT_OPTIONS})
    service.run_service(
        log,
        address=args.address,
        criu=args.criu,
        limits=limits,
        max_request=args.max_request,
        pidfile=args.pidfile,
        socket_mode=args.socket_mode,
    )
    return exitcodes.OK
