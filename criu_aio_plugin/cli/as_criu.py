"""criu-aio installed under the name ``criu``: behave as CRIU, with the AIO work added.

runc >= 1.2, crun (libcriu), CRI-O and containerd run ``criu`` from PATH; put
criu-aio there ahead of the real CRIU (docs/install-as-criu.md) and:

- ``criu swrk <fd>`` is ``criu-aio swrk <fd>`` (RESTORE and CHECK get the AIO
  work, everything else goes to CRIU untouched);
- ``criu restore ...`` fixes the images first (``wrap.restore``);
- ``criu check`` runs the AIO check first (``wrap.check``);
- every other command (dump, pre-dump, page-server, service, lazy-pages,
  --version, a command line CRIU would refuse, ...) execs the real CRIU at
  once with the same arguments.

The command is found as CRIU's own getopt finds it (``criu_options``: options
may come before or after it, optional values only attached with ``=``...).
``swrk`` is recognised in the form every client uses, ``criu swrk <fd>``; any
other spelling (``criu -v4 swrk 3``) goes to CRIU as it is.

The real CRIU is found by ``criu_locate.find_criu``, which never returns
criu-aio itself (same file by inode, or a launcher script that starts it).
"""

from __future__ import annotations

import os

from criu_aio_plugin.cli import exitcodes


def exec_real(argv: list[str], criu: str | None = None) -> int:
    """Replace this process by the real CRIU with *argv*; raises CriuError without one."""
    from criu_aio_plugin.criu_locate import criu_command, find_criu
    from criu_aio_plugin.errors import CriuError

    command = criu_command(find_criu(criu))
    try:
        os.execv(command[0], [*command, *argv])
    except OSError as err:
        raise CriuError(f"cannot exec CRIU {command[0]}: {err.strerror}", errno=err.errno) from err
    return exitcodes.ERROR  # pragma: no cover


def run(argv: list[str], prog: str) -> int:
    if len(argv) == 2 and argv[0] == "swrk":  # the hand-over path: nothing else first
        from criu_aio_plugin.cli import swrk

        return swrk.run(argv[1:], "criu swrk")
    from criu_aio_plugin import criu_options
    from criu_aio_plugin.cli import wrap

    criu, words = wrap.split_own_option(argv)
    _, name = criu_options.command_word(words)
    if name in ("restore", "check"):
        return wrap.restore(words, criu) if name == "restore" else wrap.check(words, criu)
    return exec_real(words, criu)
