"""``criu-aio swrk <fd>``: the command line of the swrk interposer (``rpc.swrk``).

Lean core: this is the first module ``criu-aio swrk`` runs (no argparse).
"""

from __future__ import annotations

import os

from criu_aio_plugin.cli import exitcodes

USAGE = """usage: {prog} <fd>

Serve one CRIU RPC client on the SOCK_SEQPACKET socket at descriptor <fd>, as
`criu swrk <fd>` does: a RESTORE gets its checkpoint's AIO rings fixed for this
host (or is refused with the reason in cr_errmsg when no nr_req can help), a
CHECK gets the AIO check, then the real CRIU takes over the same socket. Point
clients at criu-aio instead of criu: `runc --criu`, pycriu's use_binary,
libcriu's criu_set_service_binary, or install it as `criu` on PATH.

Never writes to stdout/stderr while serving. Settings (`criu-aio config` shows
them and where each comes from): the environment, else /etc/criu-aio/config.toml
($CRIU_AIO_CONFIG names another), else the default:
  CRIU_AIO_CRIU        criu: the real CRIU (else `criu` on PATH, skipping criu-aio)
  CRIU_AIO_KERNEL      kernel: live (default) or sim:...; a simulated kernel may
                       refuse a restore but never rewrites images
  CRIU_AIO_CHECK_POLICY  check_policy: what fails a CHECK: formula (default:
                       wherever CRIU's nr_req formula is wrong here), host (only
                       what criu-aio cannot fix either), off
  CRIU_AIO_LOG         log: auto (default: syslog if /dev/log answers, else
                       /var/log/criu-aio/criu-aio.log), /path/to/file, or none
  CRIU_AIO_LOG_LEVEL   log_level: debug, info (default), warning, error

{exit_codes}
"""


def run(argv: list[str], prog: str) -> int:
    from criu_aio_plugin import config
    from criu_aio_plugin.errors import ClientError
    from criu_aio_plugin.log import Log
    from criu_aio_plugin.rpc import swrk, transport

    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        print(USAGE.format(prog=prog, exit_codes=exitcodes.refusal_epilog()))
        return exitcodes.OK
    if len(argv) != 1 or not argv[0].isdigit():
        # stderr is the client's here, but a wrong command line is not a
        # client session: say it once, as `criu swrk` does.
        os.write(2, f"usage: {prog} <fd>\n".encode())
        return exitcodes.USAGE
    fd = int(argv[0])
    settings = config.current()
    log = Log(stdio_allowed=False)
    for problem in settings.problems:  # reported, never in the way of the request
        log.warning(f"config: {problem}")
    try:
        transport.check_seqpacket(fd)
    except ClientError as err:
        # Not a socket we can peek at: CRIU gets the command line as it is and
        # reports the problem the way it always does.
        log.error(f"{err}; handing `swrk {fd}` to CRIU as it is")
        log.close()
        transport.exec_argv([*swrk.real_criu(None), "swrk", argv[0]])
    return exitcodes.for_refusal(swrk.serve(fd, log))
