"""Keep the pids a checkpoint needs free of processes criu-aio starts.

CRIU restores every task and thread under its dumped pid; a pid held by any
process, even a zombie, makes the restore fail ("Can't fork for N: File
exists"). criu-aio forks during the AIO work (the estimator's probe worker is a
double-forked grandchild that outlives our exec by a few tens of ms, until the
kernel has torn its contexts down, and is reaped by whoever adopts it).

Pids are handed out sequentially after /proc/sys/kernel/ns_last_pid, and CRIU
itself writes ns_last_pid = pid - 1 before forking each task, so right after a
failed restore the *next* fork gets exactly a pid the checkpoint needs. So,
before forking: when one of the next ``WINDOW`` pids is needed, burn pids with
short-lived children (forked, exited, reaped at once) until the counter is
past it. Costs nothing in the common case (one file read).

The needed pids come from file names in a folder the client controls, so a
client of the root service could make it fork at will: the forks are capped
at ``MAX_FORKS`` per request (two windows: enough for the forks the AIO work
makes, twice), and the caller logs how many it made and when the cap stopped it.
"""

from __future__ import annotations

import os

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
WINDOW = 16  # our forks during the AIO work: the probe worker's double fork and retries
MAX_FORKS = 2 * WINDOW


def needed_pids(dir_fd: int) -> set[int]:
    """Pids and tids the checkpoint in *dir_fd* restores (core-<tid>.img, mm-<pid>.img)."""
    out: set[int] = set()
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return out
    for name in names:
        for prefix in ("core-", "mm-"):
            if name.startswith(prefix) and name.endswith(".img"):
                number = name[len(prefix) : -4]
                if number.isdigit():
                    out.add(int(number))
    return out


def last_pid() -> int | None:
    try:
        with open(NS_LAST_PID, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _burn_one() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def steer_clear(needed: set[int]) -> int:
    """Advance the pid counter past needed pids within the next WINDOW; return forks made.

    At most MAX_FORKS: a return of MAX_FORKS means the cap stopped it.
    """
    burned = 0
    while burned < MAX_FORKS:
        last = last_pid()
        if last is None:
            return burned
        ahead = {p for p in needed if last < p <= last + WINDOW}
        if not ahead:
            return burned
        _burn_one()
        burned += 1
    return burned
