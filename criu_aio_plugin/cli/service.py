"""``criu-aio service``: the command line of the ``criu service``-style socket (``rpc.service``)."""

from __future__ import annotations

import argparse
import os

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.rpc import service
from criu_aio_plugin.rpc.log import Log


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
        + "\n\nLogs: $CRIU_AIO_LOG (default stderr here; syslog, /path, none).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", default="/run/criu-aio.socket", help="socket path to bind")
    p.add_argument("--criu", help="the real CRIU (else $CRIU_AIO_CRIU, else criu on PATH)")
    p.add_argument(
        "--max-workers",
        type=int,
        default=service.DEFAULT_MAX_WORKERS,
        help="connections served at once; more wait in the backlog (default %(default)s)",
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
    log = Log(os.environ.get("CRIU_AIO_LOG") or "stderr", stdio_allowed=True)
    service.run_service(
        log,
        address=args.address,
        criu=args.criu,
        max_workers=args.max_workers,
        max_request=args.max_request,
        pidfile=args.pidfile,
    )
    return exitcodes.OK
