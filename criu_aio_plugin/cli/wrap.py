"""``criu-aio restore <criu args>`` and the check wrap: AIO work, then exec ``criu``.

``criu-aio restore -D DIR ...`` fixes the checkpoint's rings for this host the
way a RESTORE over RPC gets them fixed (estimate, transactional rewrite, or a
refusal naming the ring and the host fact behind it), then replaces itself by
``criu restore -D DIR ...`` with the very same arguments, so CRIU's exit code,
output and restored tree are CRIU's own. The same runs when criu-aio is
installed as ``criu`` (``as_criu``) and someone types ``criu restore``.

``run_check`` is the wrap of ``criu check`` for the ``criu`` personality: the AIO
check first (a failure is reported and CRIU is not run), then CRIU's own check.
The rich ``criu-aio check`` command (tables, --json) is ``cli.check``.

Where the images are: ``-D DIR`` / ``--images-dir DIR`` / ``--images-dir=DIR``
/ ``-DDIR``, else the working directory (CRIU's default). A CRIU configuration
file that sets images-dir is not read: pass -D explicitly.
"""

from __future__ import annotations

import os
import sys

from criu_aio_plugin.cli import exitcodes

RESTORE_HELP = """usage: {prog} [CRIU RESTORE OPTIONS]

Fix the AIO rings of the checkpoint in -D/--images-dir (default: the working
directory) for this host, then exec `criu restore` with the same options.
When no nr_req can reproduce a ring here, or fs.aio-max-nr cannot hold the
rings, nothing is changed, CRIU is not run and the reason is printed.

The real CRIU: --criu-aio-criu PATH (removed from CRIU's arguments), else
$CRIU_AIO_CRIU, else `criu` on PATH (never criu-aio itself). The kernel judged:
$CRIU_AIO_KERNEL (live by default; a simulated kernel never rewrites images).

{exit_codes}
"""

_CRIU_OPT = "--criu-aio-criu"


def images_dir_of(args: list[str]) -> str:
    """The images directory a CRIU command line names (last one wins, as getopt)."""
    found = "."
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in ("-D", "--images-dir") and i + 1 < len(args):
            found = args[i + 1]
            i += 2
            continue
        if arg.startswith("--images-dir="):
            found = arg.split("=", 1)[1]
        elif arg.startswith("-D") and not arg.startswith("--"):
            found = arg[2:]
        i += 1
    return found


def _split_criu(args: list[str]) -> tuple[str | None, list[str]]:
    """Take our own --criu-aio-criu PATH out of CRIU's arguments."""
    rest: list[str] = []
    criu: str | None = None
    i = 0
    while i < len(args):
        if args[i] == _CRIU_OPT and i + 1 < len(args):
            criu = args[i + 1]
            i += 2
            continue
        if args[i].startswith(_CRIU_OPT + "="):
            criu = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return criu, rest


def _exec_criu(criu: str | None, argv: list[str]) -> None:
    from criu_aio_plugin.criu_locate import criu_command, find_criu
    from criu_aio_plugin.errors import CriuError

    command = criu_command(find_criu(criu))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], [*command, *argv])
    except OSError as err:
        raise CriuError(f"cannot exec CRIU {command[0]}: {err.strerror}", errno=err.errno) from err


def run_restore(criu_args: list[str], prog: str) -> int:
    """AIO work on the images of ``criu restore <criu_args>``, then exec CRIU."""
    from criu_aio_plugin.log import Log
    from criu_aio_plugin.rpc import aio_work, images_access, protocol, transport

    criu, args = _split_criu(criu_args)
    images_dir = images_dir_of(args)
    log = Log(stdio_allowed=True)
    me = transport.PeerCred(os.getpid(), os.getuid(), os.getgid())
    dir_fd = images_access.open_images_dir(protocol.ImagesAt(path=images_dir), me)
    try:
        decision = aio_work.judge_and_fix(dir_fd, log)
    finally:
        os.close(dir_fd)
    if isinstance(decision, protocol.Answer):
        print(decision.why, file=sys.stderr)
        return exitcodes.for_refusal(decision.status)
    log.info(f"{images_dir}: {decision.why}; exec criu restore")
    log.close()
    _exec_criu(criu, ["restore", *args])
    return exitcodes.ERROR  # pragma: no cover (exec returned without raising)


def run_check(criu_args: list[str], prog: str) -> int:
    """The AIO check, then ``criu check <criu_args>`` (only for a plain check:
    ``--feature``/``--extra``/``--experimental`` ask CRIU about its own features)."""
    from criu_aio_plugin.log import Log
    from criu_aio_plugin.rpc import aio_work, protocol

    criu, args = _split_criu(criu_args)
    plain = not any(a.startswith(("--feature", "--extra", "--experimental", "--all")) for a in args)
    if plain:
        log = Log(stdio_allowed=True)
        decision = aio_work.check(log)
        log.close()
        if isinstance(decision, protocol.Answer):
            print(decision.why, file=sys.stderr)
            return exitcodes.ERROR
    _exec_criu(criu, ["check", *args])
    return exitcodes.ERROR  # pragma: no cover


def run(argv: list[str], prog: str) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(RESTORE_HELP.format(prog=prog, exit_codes=exitcodes.REFUSAL_EPILOG))
        return exitcodes.OK
    return run_restore(argv, prog)
