"""``criu-aio restore <criu args>`` and the ``criu`` personality's restore and check.

``criu-aio restore -D DIR ...`` fixes the checkpoint's rings for this host the
way a RESTORE over RPC gets them fixed (estimate, transactional rewrite, or a
refusal naming the ring and the host fact behind it), then replaces itself by
``criu restore -D DIR ...`` with the very same arguments, so CRIU's exit code,
output and restored tree are CRIU's own. The same runs when criu-aio is
installed as ``criu`` (``as_criu``) and someone types ``criu restore``;
``check`` is that personality's ``criu check``: the AIO check first, then
CRIU's own. (The rich ``criu-aio check`` command is ``cli.check``.)

Order of work: the real CRIU is located first (without one nothing is
touched); the command line is read exactly as CRIU reads it
(``criu_options``: -D, -W, -o, CRIU's config files); one CRIU would refuse
goes to CRIU untouched, to refuse in its own words. A refusal's reason goes
to stderr, to criu-aio's log and into the log file CRIU would have written
(-o, relative to -W, else -D), so whoever reads that log finds it.
"""

from __future__ import annotations

import os
import sys

from criu_aio_plugin.cli import exitcodes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from criu_aio_plugin.criu_options import CommandLine
    from criu_aio_plugin.log import Log

RESTORE_HELP = """usage: {prog} [CRIU RESTORE OPTIONS]

Fix the AIO rings of the checkpoint in -D/--images-dir (default: the working
directory) for this host, then exec `criu restore` with the same options.
When no nr_req can reproduce a ring here, or fs.aio-max-nr cannot hold the
rings, nothing is changed, CRIU is not run and the reason is printed.

The real CRIU: --criu-aio-criu PATH (removed from CRIU's arguments), else the
criu setting ($CRIU_AIO_CRIU, /etc/criu-aio/config.toml), else `criu` on PATH
(never criu-aio itself). The kernel judged: the kernel setting (live by
default; a simulated kernel never rewrites images). `criu-aio config` shows
the settings. A refusal is printed here and written into CRIU's log file
(-o FILE, relative to -W, else -D), CRIU's command line read as CRIU reads it.

{exit_codes}
"""

OWN_OPTION = "--criu-aio-criu"  # criu-aio's own: the real CRIU, taken out of CRIU's words


def split_own_option(args: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--criu-aio-criu PATH`` (or ``=PATH``) out of CRIU's words; the last one wins."""
    rest: list[str] = []
    criu: str | None = None
    i = 0
    while i < len(args):
        if args[i] == "--":
            rest += args[i:]
            break
        if args[i] == OWN_OPTION and i + 1 < len(args):
            criu = args[i + 1]
            i += 2
            continue
        if args[i].startswith(OWN_OPTION + "="):
            criu = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return criu, rest


# the options of `criu check` that ask CRIU about its own features, not a plain check
_FEATURE_CHECKS = ("1063", "&check_extra_features=1", "&check_experimental_features=1", "1079")


def _exec_criu(command: list[str], argv: list[str]) -> NoReturn:
    from criu_aio_plugin.errors import CriuError

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], [*command, *argv])
    except OSError as err:
        raise CriuError(f"cannot exec CRIU {command[0]}: {err.strerror}", errno=err.errno) from err


def _start(argv: list[str], criu: str | None) -> tuple[Log, CommandLine, list[str] | int]:
    """The log, CRIU's reading of *argv*, and the real CRIU's command (or an exit code)."""
    from criu_aio_plugin import config, criu_options
    from criu_aio_plugin.criu_locate import criu_command, find_criu
    from criu_aio_plugin.errors import CriuError
    from criu_aio_plugin.log import Log

    log = Log(stdio_allowed=True)
    for problem in config.current().problems:
        print(f"criu-aio: config: {problem}", file=sys.stderr)
        log.warning(f"config: {problem}")
    line = criu_options.parse_command_line(argv)
    try:
        return log, line, criu_command(find_criu(criu))
    except CriuError as err:
        return log, line, _refuse(line, f"criu-aio: cannot run CRIU: {err}", exitcodes.ERROR, log)


def _refuse(line: CommandLine, why: str, code: int, log: Log) -> int:
    """Say *why* CRIU is not run: stderr, criu-aio's log, and CRIU's own log file."""
    from criu_aio_plugin.log import write_criu_log

    print(why, file=sys.stderr)
    log.warning(why)
    if line.log_file is not None:
        lines = [why, f"CRIU did not run. criu-aio's own log: {log.where()}"]
        try:
            path = write_criu_log(line.work_dir, line.log_file, lines)
            log.info(f"reason written into CRIU's log {path}")
        except OSError as err:
            log.warning(f"could not write the reason into {line.log_path()}: {err.strerror}")
    log.close()
    return code


def restore(argv: list[str], criu: str | None = None) -> int:
    """``criu ARGV`` where ARGV is a restore: AIO work on its images, then exec CRIU."""
    from criu_aio_plugin.errors import ClientError
    from criu_aio_plugin.rpc import aio_work, images_access, protocol, transport

    log, line, command = _start(argv, criu)
    if isinstance(command, int):
        return command
    if line.command != "restore":
        log.info(f"not a restore CRIU would run ({line.error}): CRIU answers it")
        log.close()
        _exec_criu(command, argv)
    images_dir = line.images_dir
    me = transport.PeerCred(os.getpid(), os.getuid(), os.getgid())
    try:
        dir_fd = images_access.open_images_dir(protocol.ImagesAt(path=images_dir), me)
    except ClientError as err:
        log.info(f"images not examined, CRIU decides: {err}")
        log.close()
        _exec_criu(command, argv)
    try:
        decision = aio_work.judge_and_fix(dir_fd, log)
    finally:
        os.close(dir_fd)
    if isinstance(decision, protocol.Answer):
        return _refuse(line, decision.why, exitcodes.for_refusal(decision.status), log)
    log.info(f"{images_dir}: {decision.why}; exec criu restore")
    log.close()
    _exec_criu(command, argv)


def check(argv: list[str], criu: str | None = None) -> int:
    """``criu ARGV`` where ARGV is a check: the AIO check, then CRIU's (only for a
    plain check: --feature/--extra/--experimental/--all ask CRIU about itself)."""
    from criu_aio_plugin.rpc import aio_work, protocol

    log, line, command = _start(argv, criu)
    if isinstance(command, int):
        return command
    plain = line.command == "check" and not any(line.has(o) for o in _FEATURE_CHECKS)
    if plain:
        decision = aio_work.check(log)
        if isinstance(decision, protocol.Answer):
            return _refuse(line, decision.why, exitcodes.ERROR, log)
    log.close()
    _exec_criu(command, argv)


def run_restore(criu_args: list[str], prog: str) -> int:
    """``criu-aio restore CRIU_ARGS``: ``criu restore CRIU_ARGS`` with the AIO work first."""
    criu, args = split_own_option(criu_args)
    return restore(["restore", *args], criu)


def run(argv: list[str], prog: str) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(RESTORE_HELP.format(prog=prog, exit_codes=exitcodes.refusal_epilog()))
        return exitcodes.OK
    return run_restore(argv, prog)
