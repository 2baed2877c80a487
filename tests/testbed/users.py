"""Other local users, for tests that run as root: code run as another uid, forked.

``as_user(uid, fn, *args)`` runs ``fn(*args)`` in a child forked from the test
process that first drops to *uid* (no supplementary groups, gid = uid) and
returns its result (pickled through a pipe) or raises ``UserCodeError`` with
the child's exception. ``Holding`` keeps such a child alive in the background
(a client holding connections), under the test's control.

Forked rather than spawned on purpose: the child touches no file of the
checkout or of this Python (which may sit under a 0700 folder such as
/root/.pyenv, or a private clone made by ``mktemp -d``), so these tests do not
depend on where the tree lives. *fn* must only use what is imported already.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

NOBODY = 65534
OTHER_USER = 65533  # a second unprivileged uid, without a passwd entry (none is needed)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_DUMPABLE = 4


class UserCodeError(Exception):
    """*fn* raised in the child; the message holds its traceback."""


def drop_to(uid: int, gid: int | None = None) -> None:
    """In a child: become *uid* for good (real, effective and saved ids; no groups).

    Then dumpable again, as a program that user started would be: a change of
    credentials makes a process non-dumpable (its /proc entries root's), exec
    of an ordinary program makes it dumpable.
    """
    gid = uid if gid is None else gid
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _LIBC.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def _child(uid: int, write_end: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    code = 0
    try:
        drop_to(uid)
        result: tuple[str, Any] = ("ok", fn(*args))
    except BaseException:
        result = ("error", traceback.format_exc())
        code = 1
    try:
        data = pickle.dumps(result)
        while data:
            data = data[os.write(write_end, data) :]
    finally:
        os._exit(code)


def _read_all(fd: int, deadline: float) -> bytes:
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the child did not answer in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def as_user(uid: int, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
    """``fn(*args)`` run as *uid* in a forked child; its return value (picklable)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        _child(uid, write_end, fn, args)
    os.close(write_end)
    try:
        data = _read_all(read_end, time.monotonic() + timeout)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if not data:
        raise UserCodeError(f"the child (uid {uid}) died without an answer")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise UserCodeError(f"as uid {uid}: {value}")
    return value


class Holding:
    """A child of uid *uid* that runs ``setup(*args)`` and holds what it made until ``close``.

    ``setup`` returns a picklable report (sent back as ``report``); the objects
    it keeps alive (sockets) live in the child until the test closes this.
    """

    def __init__(self, uid: int, setup: Callable[..., Any], *args: Any, timeout: float = 60.0):
        self.uid = uid
        report_r, report_w = os.pipe()
        self._hold_r, self._hold_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.close(report_r)
            os.close(self._hold_w)
            code = 0
            try:
                drop_to(uid)
                kept = setup(*args)
                data = pickle.dumps(("ok", kept[0] if isinstance(kept, tuple) else kept))
            except BaseException:
                data = pickle.dumps(("error", traceback.format_exc()))
                code = 1
            try:
                os.write(report_w, data)
                os.close(report_w)
                os.read(self._hold_r, 1)  # until the test closes its end
            finally:
                os._exit(code)
        os.close(report_w)
        os.close(self._hold_r)
        try:
            kind, value = pickle.loads(_read_all(report_r, time.monotonic() + timeout))
        finally:
            os.close(report_r)
        if kind == "error":
            self.close()
            raise UserCodeError(f"as uid {uid}: {value}")
        self.report = value

    def close(self) -> None:
        """Let the child go (it closes everything it held) and reap it."""
        if self._hold_w >= 0:
            os.close(self._hold_w)
            self._hold_w = -1
            os.waitpid(self.pid, 0)

    def __enter__(self) -> Holding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
