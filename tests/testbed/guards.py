"""A test that could block forever (an open() of a FIFO, a read nobody answers) fails instead."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fails_if_blocked(seconds: int) -> Iterator[None]:
    """Raise AssertionError in the test if its body still runs after *seconds* (SIGALRM)."""

    def stuck(signum: int, frame: object) -> None:
        raise AssertionError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
