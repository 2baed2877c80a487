"""criu-aio installed under the name ``criu``: behave as CRIU, with the AIO work added.

runc >= 1.2, crun (libcriu), CRI-O and containerd run ``criu`` from PATH; put
criu-aio there ahead of the real CRIU (docs/install-as-criu.md) and:

- ``criu swrk <fd>`` is ``criu-aio swrk <fd>`` (RESTORE and CHECK get the AIO
  work, everything else goes to CRIU untouched);
- ``criu restore ...`` fixes the images first (``wrap.run_restore``);
- ``criu check`` runs the AIO check first (``wrap.run_check``);
- every other command (dump, pre-dump, page-server, service, lazy-pages,
  --version, ...) execs the real CRIU at once with the same arguments.

The real CRIU is found by ``criu_locate.find_criu``, which never returns
criu-aio itself (same file by inode, or a launcher script that starts it).

The command is CRIU's first non-option word, as CRIU's getopt sees it: options
may come first (``criu -v4 restore -D d``); the value of an option that takes
one is skipped, for the options listed in ``_TAKES_VALUE``.
"""

from __future__ import annotations

import os

from criu_aio_plugin.cli import exitcodes

# CRIU's options that take a separate value (criu/crtools.c and config.c);
# enough to find the command word in the command lines runtimes and people use.
_TAKES_VALUE = frozenset(
    (
        "-D", "--images-dir", "-W", "--work-dir", "-o", "--log-file", "-t", "--tree",
        "-p", "--parent", "-S", "--pidfile", "--root", "--address", "--port", "-r",
        "--config", "--lsm-profile", "--exec-cmd", "--cgroup-root", "--inherit-fd",
        "--external", "--ext-mount-map", "--veth-pair", "--action-script", "--status-fd",
        "--freeze-cgroup", "--ps-socket", "--cpu-cap", "--manage-cgroups", "--join-ns",
        "--timeout", "--network-lock", "--pre-dump-mode", "--lsm-mount-context",
        "--cgroup-props", "--cgroup-props-file", "--cgroup-dump-controller",
        "--cgroup-yard", "--irmap-scan-path", "--ghost-limit", "--empty-ns",
        "--tls-cacert", "--tls-cacrl", "--tls-cert", "--tls-key", "-M", "-L", "--libdir",
    )
)  # fmt: skip


def command_of(args: list[str]) -> tuple[int, str | None]:
    """(index, name) of CRIU's command word in *args*, or (-1, None)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return (i + 1, args[i + 1]) if i + 1 < len(args) else (-1, None)
        if arg.startswith("-"):
            i += 2 if arg in _TAKES_VALUE else 1
            continue
        return i, arg
    return -1, None


def _exec_real(argv: list[str]) -> int:
    from criu_aio_plugin.criu_locate import criu_command, find_criu
    from criu_aio_plugin.errors import CriuError

    command = criu_command(find_criu())
    try:
        os.execv(command[0], [*command, *argv])
    except OSError as err:
        raise CriuError(f"cannot exec CRIU {command[0]}: {err.strerror}", errno=err.errno) from err
    return exitcodes.ERROR  # pragma: no cover


def run(argv: list[str], prog: str) -> int:
    index, name = command_of(argv)
    if name == "swrk" and index == 0:
        from criu_aio_plugin.cli import swrk

        return swrk.run(argv[1:], "criu swrk")
    if name == "restore":
        from criu_aio_plugin.cli import wrap

        return wrap.run_restore(argv[:index] + argv[index + 1 :], "criu restore")
    if name == "check":
        from criu_aio_plugin.cli import wrap

        return wrap.run_check(argv[:index] + argv[index + 1 :], "criu check")
    return _exec_real(argv)
