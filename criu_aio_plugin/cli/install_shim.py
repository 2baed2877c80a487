"""``criu-aio install-shim``: write a fast launcher that runs criu-aio as ``criu``.

The launcher is a three-line Python script whose interpreter line is this
Python with ``-IS`` (isolated, no site): no .pth files, no site-packages scan,
which saves 10-20 ms per start on the swrk hand-over path. It puts the two
folders criu-aio needs (its own and protobuf's) on sys.path explicitly, so it
must be written again after criu-aio or Python is moved or upgraded.

Installed as DIR/criu with DIR ahead of the real CRIU on PATH, runtimes that
run ``criu`` (runc >= 1.2, crun, CRI-O, containerd) get criu-aio; ``runc
--criu DIR/criu`` does the same for runc 1.1. The real CRIU is then found by
the ``criu`` setting (/etc/criu-aio/config.toml, $CRIU_AIO_CRIU) or on PATH,
skipping the launcher (it names criu_aio_plugin, which criu_locate
recognises). See docs/install-as-criu.md.

``--criu PATH`` and ``--config FILE`` are recorded in the launcher: it then
behaves as if every run had them on its command line (they beat the
environment and the default config file), so a runtime that passes no
environment (podman's conmon, containerd's shims) still gets the right CRIU,
and a launcher can carry its own config file instead of /etc/criu-aio's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.errors import ClientError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

TEMPLATE = """#!{python} -IS
# criu-aio launcher, written by `criu-aio install-shim` (criu_aio_plugin {version}).
# Runs criu-aio as `{name}` without site processing; write it again after upgrading.{note}
import gc, sys
sys.path[:0] = {paths!r}
gc.disable()  # a short-lived process: no cyclic collections while importing
from criu_aio_plugin.cli.main import main
gc.enable()
raise SystemExit(main({call}))
"""


def launcher_text(name: str = "criu", settings: Mapping[str, str] | None = None) -> str:
    """The launcher script for this installation of criu-aio (*settings*: recorded ones)."""
    import google.protobuf

    import criu_aio_plugin
    from criu_aio_plugin._version import __version__

    def parent_of(package_init: str | None, depth: int) -> str:
        assert package_init is not None
        path = os.path.dirname(os.path.abspath(package_init))
        for _ in range(depth):
            path = os.path.dirname(path)
        return path

    paths = [parent_of(criu_aio_plugin.__file__, 1)]
    proto_root = parent_of(google.protobuf.__file__, 2)
    if proto_root not in paths:
        paths.append(proto_root)
    # main() picks the `criu` personality when the launcher's file name is
    # `criu`; under any other name it offers criu-aio's commands (`NAME swrk
    # <fd>` works under both).
    recorded = dict(settings or {})
    note = call = ""
    if recorded:
        note = "\n# Recorded (as if on its command line): " + ", ".join(
            f"{key} = {value}" for key, value in recorded.items()
        )
        call = f"launcher={recorded!r}"
    return TEMPLATE.format(
        python=sys.executable, version=__version__, name=name, paths=paths, note=note, call=call
    )


def recorded_settings(criu: str | None, config_file: str | None) -> dict[str, str]:
    """The settings to record, checked: an executable real CRIU, an absolute config path."""
    out: dict[str, str] = {}
    if criu:
        from criu_aio_plugin.criu_locate import find_criu

        out["criu"] = find_criu(os.path.abspath(criu))  # raises unless a real CRIU
    if config_file:
        path = os.path.abspath(config_file)
        if not path.isprintable():
            raise ClientError(f"--config {config_file!r}: holds control characters")
        out["config"] = path
    return out


def install(
    directory: str,
    name: str = "criu",
    force: bool = False,
    settings: Mapping[str, str] | None = None,
) -> str:
    """Write the launcher as *directory*/*name* (mode 0755); return its path."""
    target = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise ClientError(f"cannot create {directory}: {err.strerror}", errno=err.errno) from err
    if os.path.lexists(target) and not force:
        from criu_aio_plugin.criu_locate import is_criu_aio

        if not is_criu_aio(target):
            raise ClientError(
                f"{target} exists and is not criu-aio (the real CRIU?)",
                hint="choose another --dir, or pass --force to replace it",
            )
    tmp = f"{target}.criu-aio-tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(launcher_text(name, settings))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ClientError(f"cannot write {target}: {err.strerror}", errno=err.errno) from err
    return target


def run(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Write a fast launcher that runs criu-aio as `criu`. Put DIR ahead of the "
            "real CRIU on PATH (runc >= 1.2, crun, CRI-O, containerd), or give the "
            "launcher to `runc --criu` (runc 1.1), pycriu's use_binary or libcriu's "
            "criu_set_service_binary. The real CRIU is then found by --criu (recorded), "
            "the criu setting ($CRIU_AIO_CRIU, the config file) or on PATH, never the "
            "launcher itself."
        ),
        epilog=exitcodes.epilog(exitcodes.OK, exitcodes.ERROR, exitcodes.USAGE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", required=True, help="folder to write the launcher into")
    p.add_argument("--name", default="criu", help="file name (default: criu)")
    p.add_argument("--force", action="store_true", help="replace a file that is not criu-aio")
    p.add_argument("--print", action="store_true", help="print the launcher instead")
    p.add_argument(
        "--criu",
        metavar="PATH",
        help="record the real CRIU in the launcher (beats the environment and config file)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="record a config file for the launcher instead of /etc/criu-aio/config.toml",
    )
    args = p.parse_args(argv)
    settings = recorded_settings(args.criu, args.config)
    if args.print:
        print(launcher_text(args.name, settings), end="")
        return exitcodes.OK
    print(install(args.dir, args.name, args.force, settings))
    return exitcodes.OK
