"""Entry point of the ``criu-aio`` console script.

Dispatch is by table and imports lazily: ``criu-aio swrk <fd>`` sits on a
restore's critical path and must not pay for argparse trees or protobuf it does
not need. Each subcommand module exposes ``run(argv, prog) -> int``. This is the
only place that turns a ``CriuAioError`` into a message and an exit code.

When the program is invoked under the name ``criu`` (installed as ``criu`` on
PATH ahead of the real one, see docs/install-as-criu.md) it behaves as CRIU:
``swrk``, ``restore`` and ``check`` get the AIO work, everything else is passed
straight to the real CRIU.

Settings (``criu_aio_plugin.config``) at the command-line level come from here:
``criu-aio --config PATH <command>`` and what a launcher written by
``install-shim --criu/--config`` recorded (``main(launcher={...})``).
"""

from __future__ import annotations

import os
import sys

from criu_aio_plugin.cli import exitcodes

# Lean core (docs/architecture.md): annotations only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# name -> (module, one-line help). Order is the order --help shows.
COMMANDS: dict[str, tuple[str, str]] = {
    "swrk": (
        "criu_aio_plugin.cli.swrk",
        "serve one RPC client on an inherited socket, like `criu swrk <fd>`",
    ),
    "service": (
        "criu_aio_plugin.cli.service",
        "listen like `criu service` and hand each client to CRIU",
    ),
    "restore": (
        "criu_aio_plugin.cli.wrap",
        "fix the images' AIO rings, then exec `criu restore ARGS`",
    ),
    "check": ("criu_aio_plugin.cli.check", "CRIU's check plus the AIO ring-sizing check"),
    "inspect": (
        "criu_aio_plugin.cli.inspect",
        "show every AIO ring of a checkpoint and its verdict here",
    ),
    "fix": ("criu_aio_plugin.cli.fix", "rewrite nr_req in a checkpoint for this host (crash-safe)"),
    "profile": (
        "criu_aio_plugin.cli.profile",
        "this host's ring-sizing facts (text, --json, --nfd)",
    ),
    "can-restore": (
        "criu_aio_plugin.cli.can_restore",
        "which host profiles can restore a checkpoint",
    ),
    "config": (
        "criu_aio_plugin.cli.show_config",
        "the effective settings and where each came from (config file, environment, ...)",
    ),
    "demo": (
        "criu_aio_plugin.cli.demo",
        "the main job end to end in seconds: checkpoint, CRIU alone fails, criu-aio restores",
    ),
    "install-shim": (
        "criu_aio_plugin.cli.install_shim",
        "write a fast launcher that runs criu-aio as `criu` (runc, crun, CRI-O, containerd)",
    ),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: criu-aio [--version] [--help] [--config FILE] <command> [args...]",
        "",
        "Restore CRIU checkpoints holding Linux AIO rings on any kernel and host:",
        "criu-aio finds the nr_req that reproduces each ring on the live kernel,",
        "rewrites the checkpoint's mm images safely, then hands over to the real CRIU.",
        "",
        "commands:",
    ]
    for name, (module, text) in COMMANDS.items():
        if _available(module):
            lines.append(f"  {name.ljust(width)}  {text}")
    lines += [
        "",
        "`criu-aio <command> --help` explains each command, its options and exit codes.",
        "Settings come from the command line, then CRIU_AIO_* variables, then",
        "/etc/criu-aio/config.toml (--config FILE or $CRIU_AIO_CONFIG names another),",
        "then defaults; `criu-aio config` shows them. The real CRIU: --criu PATH, the",
        "criu setting ($CRIU_AIO_CRIU, the file's criu = ...), then `criu` on PATH",
        "(never criu-aio itself). The kernel judged: --kernel, the kernel setting.",
    ]
    return "\n".join(lines)


def _available(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _report(err: BaseException) -> None:
    print(f"criu-aio: error: {err}", file=sys.stderr)


def _record_launcher(launcher: Mapping[str, str]) -> None:
    """Settings a launcher recorded (install-shim --criu/--config): command-line level."""
    from criu_aio_plugin import config

    where = sys.argv[0] if sys.argv and sys.argv[0] else "the launcher"
    for key, value in launcher.items():
        config.set_command_line(key, value, f"launcher {where} (install-shim --{key})")


def _take_config_option(args: list[str]) -> str | None:
    """Take a leading ``--config FILE`` / ``--config=FILE`` out of *args*; None if fine."""
    while args and args[0].startswith("--config"):
        word = args.pop(0)
        if word == "--config":
            if not args:
                return "--config needs a FILE"
            value = args.pop(0)
        elif word.startswith("--config="):
            value = word.split("=", 1)[1]
        else:
            return f"unknown option {word!r}"
        from criu_aio_plugin import config

        config.set_command_line("config", value, "--config")
    return None


def main(argv: Sequence[str] | None = None, *, launcher: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    invoked_as = os.path.basename(sys.argv[0]) if argv is None else "criu-aio"
    if launcher:
        _record_launcher(launcher)
    if invoked_as == "criu":
        return _run_module("criu_aio_plugin.cli.as_criu", args, "criu")
    problem = _take_config_option(args)
    if problem is not None:
        print(f"criu-aio: {problem}; see `criu-aio --help`", file=sys.stderr)
        return exitcodes.USAGE
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return exitcodes.OK
    if args[0] in ("-V", "--version"):
        from criu_aio_plugin._version import __version__

        print(f"criu-aio {__version__}")
        return exitcodes.OK
    name = args[0]
    entry = COMMANDS.get(name)
    if entry is None:
        return _unknown(name)
    if name not in _REPORT_SETTINGS_THEMSELVES:
        _say_config_problems()
    return _run_module(entry[0], args[1:], f"criu-aio {name}", name)


# swrk and service log the settings' problems (stdio is not theirs, or not the
# user's), `config` lists them, `restore` prints them with CRIU's command line.
_REPORT_SETTINGS_THEMSELVES = frozenset(("swrk", "service", "config", "restore"))


def _say_config_problems() -> None:
    """Unknown keys, bad values, an unreadable config file: on stderr, never fatal."""
    from criu_aio_plugin import config

    for problem in config.current().problems:
        print(f"criu-aio: config: {problem}", file=sys.stderr)


def _unknown(name: str) -> int:
    print(f"criu-aio: unknown command {name!r}; see `criu-aio --help`", file=sys.stderr)
    return exitcodes.USAGE


def _run_module(module: str, argv: list[str], prog: str, name: str = "") -> int:
    from criu_aio_plugin.errors import CriuAioError

    try:
        # Not _available() first, nor importlib.import_module: importlib is
        # not lean (docs/architecture.md); __import__ is built in.
        try:
            __import__(module)
            mod = sys.modules[module]
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            return _unknown(name or module)  # a command this installation lacks
        rc: int = mod.run(argv, prog)
        return rc
    except CriuAioError as err:
        _report(err)
        return exitcodes.ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return exitcodes.ERROR


if __name__ == "__main__":
    raise SystemExit(main())
