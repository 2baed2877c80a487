"""Find the real CRIU binary that criu-aio hands over to.

Order: an explicit path (``--criu``), then the ``criu`` setting (a launcher's
recorded CRIU, ``$CRIU_AIO_CRIU``, the config file: ``criu_aio_plugin.config``),
then ``criu`` on PATH. The practical install puts criu-aio on PATH *as* ``criu`` ahead of the
real one (runc >= 1.2, crun, CRI-O and containerd take ``criu`` from PATH), so
the PATH search must skip criu-aio itself however it got there: the console
script, a symlink or hard link to it, or a small wrapper script that runs it.

This runs on the ``swrk`` path before every restore: only os.stat and a short
read of candidate scripts, no protobuf import, no subprocess.
"""

from __future__ import annotations

import errno
import os
import sys

from criu_aio_plugin import config
from criu_aio_plugin.errors import CriuError

ENV_VAR = "CRIU_AIO_CRIU"
# Written by scripts/provision-criu.sh: the path of a CRIU that passed `criu check`.
PROVISIONED_PATH_FILE = "/opt/criu-aio/criu-path"

# A launcher is recognised by its text: Python console scripts import the
# package, shell wrappers run `criu-aio` as a command. "criu-aio" as a folder
# name (/opt/criu-aio/criu/...) is not a command and does not count.
_PKG_MARKER = b"criu_aio_plugin"
# The word is matched by hand, not with re (lean core: docs/architecture.md).
_COMMAND_WORD = b"criu-aio"
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_NOT_BEFORE = _WORD_BYTES | frozenset(b".-")
_NOT_AFTER = _WORD_BYTES | frozenset(b"./-")
_SCRIPT_READ_LIMIT = 64 * 1024


def _exec_path() -> list[str]:
    """``os.get_exec_path()`` without its ``import warnings`` (lean core)."""
    return os.environ.get("PATH", os.defpath).split(os.pathsep)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _self_ids() -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every file that is this criu-aio's entry point."""
    candidates = [sys.argv[0] if sys.argv else ""]
    candidates.append(os.path.join(os.path.dirname(sys.executable), "criu-aio"))
    candidates += [os.path.join(d or ".", "criu-aio") for d in _exec_path()]
    ids = set()
    for c in candidates:
        if c:
            fid = _file_id(c)
            if fid is not None:
                ids.add(fid)
    return ids


def is_criu_aio_launcher(path: str) -> bool:
    """True when *path* is a script that starts criu-aio (not the real CRIU).

    ELF binaries are never launchers; scripts are read (at most 64 KiB) for an
    import of criu_aio_plugin or a ``criu-aio`` command word.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_SCRIPT_READ_LIMIT)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return False
    return _PKG_MARKER in head or _has_command_word(head)


def _has_command_word(text: bytes) -> bool:
    """``criu-aio`` as a command word: not part of a longer name or a path component."""
    at = text.find(_COMMAND_WORD)
    while at >= 0:
        end = at + len(_COMMAND_WORD)
        before_ok = at == 0 or text[at - 1] not in _NOT_BEFORE
        after_ok = end == len(text) or text[end] not in _NOT_AFTER
        if before_ok and after_ok:
            return True
        at = text.find(_COMMAND_WORD, at + 1)
    return False


def is_criu_aio(path: str, self_ids: set[tuple[int, int]] | None = None) -> bool:
    """True when *path* is criu-aio itself: same file (resolved, by inode) or a launcher."""
    fid = _file_id(path)
    if fid is None:
        return False
    ids = _self_ids() if self_ids is None else self_ids
    if fid in ids:
        return True
    return is_criu_aio_launcher(os.path.realpath(path))


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _hint() -> str:
    provisioned = ""
    try:
        with open(PROVISIONED_PATH_FILE, encoding="utf-8") as f:
            recorded = f.read().strip()
        if recorded and _executable(recorded):
            provisioned = f"; a provisioned CRIU is at {recorded}: {ENV_VAR}={recorded}"
    except OSError:
        pass
    return (
        f"install CRIU >= 4.0 (`scripts/provision-criu.sh` from the criu-aio source tree, as "
        f'root), then name it: criu = "PATH" in {config.DEFAULT_PATH}, {ENV_VAR}=PATH '
        f"or --criu PATH{provisioned}"
    )


def _checked(path: str, source: str, self_ids: set[tuple[int, int]]) -> str:
    full = os.path.abspath(path)
    if not _executable(full):
        why = "does not exist" if not os.path.exists(full) else "is not an executable file"
        raise CriuError(f"CRIU given by {source} ({full}) {why}", hint=_hint())
    if is_criu_aio(full, self_ids):
        raise CriuError(
            f"CRIU given by {source} ({full}) is criu-aio itself, not the real CRIU",
            errno=errno.ELOOP,  # handing over to it would start us again
            hint=_hint(),
        )
    return full


def find_criu(explicit: str | None = None) -> str:
    """Absolute path of the real CRIU; raises CriuError (with a hint) when there is none."""
    self_ids = _self_ids()
    if explicit:
        return _checked(explicit, "--criu", self_ids)
    setting = config.current().setting("criu")
    if setting.value:
        return _checked(setting.value, setting.source, self_ids)
    skipped: list[str] = []
    for folder in _exec_path():
        candidate = os.path.abspath(os.path.join(folder or ".", "criu"))
        if not _executable(candidate):
            continue
        if is_criu_aio(candidate, self_ids):
            skipped.append(candidate)
            continue
        return candidate
    also = f" (skipped criu-aio itself at {', '.join(skipped)})" if skipped else ""
    raise CriuError(f"no real CRIU found: no `criu` on PATH{also}", hint=_hint())


def criu_command(path: str) -> list[str]:
    """The argv prefix that runs the CRIU at *path* (a list, to append CRIU's arguments)."""
    return [path]
