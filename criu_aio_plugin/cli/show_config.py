"""``criu-aio config``: the effective settings, where each came from, and what is wrong.

The settings every entry point uses (``criu_aio_plugin.config``), resolved the
way a restore would resolve them now, in this environment: the config file
consulted, each key's value and source (command line or launcher, environment,
file, default), the problems found (unknown keys, bad values, an unreadable
file), and what the values lead to: the real CRIU found, where the log goes.
Run it under the runtime's environment (or with the launcher the runtime
uses: ``/usr/local/sbin/criu-aio-launcher config``) to see what it will see.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from criu_aio_plugin import config
from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.errors import CriuAioError

DESCRIPTION = """\
Show criu-aio's effective settings and where each came from. Each setting is
taken from the first of: the command line (or what `install-shim --criu/--config`
recorded in the launcher), the environment (CRIU_AIO_*), the config file
(/etc/criu-aio/config.toml; `criu-aio --config FILE` or $CRIU_AIO_CONFIG names
another, `none` none), the built-in default. Bad values and unknown keys are
reported and skipped; they never stop a restore.

keys (environment variable; default):
"""


def _log_target(value: str) -> str:
    """Where lines of the ``log`` setting *value* go from this process now."""
    from criu_aio_plugin import log as log_module

    if value in ("auto", "syslog"):
        import socket

        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(log_module.SYSLOG_SOCKET)
            return f"syslog ({log_module.SYSLOG_SOCKET})"
        except OSError as err:
            return (
                f"{log_module.DEFAULT_FILE} (no syslog: {log_module.SYSLOG_SOCKET}: {err.strerror})"
            )
    if value == "stderr":
        return "stderr where stderr is criu-aio's (service, command line); else as auto"
    if value == "none":
        return "nowhere"
    return value.removeprefix("file:")


def _criu_found() -> tuple[str | None, str | None]:
    from criu_aio_plugin.criu_locate import find_criu

    try:
        return find_criu(), None
    except CriuAioError as err:
        return None, str(err)


def _kernel_problem(spec: str) -> str | None:
    if not spec.startswith("sim:"):
        return None
    from criu_aio_plugin.kernel.select import simulated_from_spec

    try:
        simulated_from_spec(spec[len("sim:") :])
    except CriuAioError as err:
        return str(err)
    return None


def _parser(prog: str) -> argparse.ArgumentParser:
    keys = "\n".join(
        f"  {key:13s} {env} ({default or 'empty'}): {meaning}"
        for key, (env, default, meaning) in config.KEYS.items()
    )
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION + keys,
        epilog="exit codes:\n  0  settings fine, the real CRIU found\n"
        "  1  a problem was reported (see `problems`)\n  2  usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    return p


def run(argv: list[str], prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    settings = config.current()
    problems = list(settings.problems)
    criu, criu_error = _criu_found()
    if criu_error is not None:
        problems.append(f"the real CRIU: {criu_error}")
    kernel_problem = _kernel_problem(settings.kernel)
    if kernel_problem is not None:
        problems.append(f"kernel = {settings.kernel!r}: {kernel_problem}")
    log_to = _log_target(settings.log)
    if args.json:
        doc = {
            "config_file": {
                "path": settings.file or None,
                "chosen_by": settings.file_source,
                "read": settings.file_read,
            },
            "settings": {
                item.key: {"value": item.value, "source": item.source} for item in settings.items
            },
            "criu": criu,
            "log_target": log_to,
            "problems": problems,
        }
        print(json.dumps(doc, indent=2))
    else:
        where = settings.file or "none"
        state = "read" if settings.file_read else "not read"
        if settings.file and not settings.file_read and not os.path.exists(settings.file):
            state = "absent"
        print(f"config file: {where} ({state}; chosen by {settings.file_source})")
        width = max(len(item.key) for item in settings.items)
        shown = [(item.key, item.value or "(empty)", item.source) for item in settings.items]
        value_width = max(len(value) for _, value, _ in shown)
        for key, value, source in shown:
            print(f"  {key:{width}s}  {value:{value_width}s}  from {source}")
        print(f"real CRIU: {criu or 'NOT FOUND'}")
        print(f"log goes to: {log_to}")
        if problems:
            print("problems:")
            for problem in problems:
                print(f"  - {problem}")
    sys.stdout.flush()
    return exitcodes.ERROR if problems else exitcodes.OK
