"""The one vocabulary for "can this ring (or checkpoint, or host) restore here?".

Every verdict criu-aio reaches is one of five statuses, ordered by severity
(the worst ring decides for a checkpoint, the worst host for a fleet unless
asked for the best):

    ======== ============ ====================================================
    name     severity     meaning
    ======== ============ ====================================================
    fine     0            the stored nr_req recreates the ring: CRIU alone works
    rewrite  1            another nr_req does: criu-aio rewrites it, then CRIU works
    budget   2            fs.aio-max-nr cannot hold the rings now (a fact of now)
    impossible 3          no nr_req can recreate the ring on this host
    error    4            the kernel refused in a way nobody expected
    ======== ============ ====================================================

The estimator gives these per ring, the decision layer per checkpoint, the
AIO check per ring size and the fleet per host. Exit codes are a mapping of
these statuses done once, at the edge (``criu_aio_plugin.cli.exitcodes``).

Lean core: imported on ``criu-aio swrk``'s restore path; builtins only.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class Status:
    """One status: compared with ``is``; ``severity`` orders them (higher is worse).

    A handful of singletons rather than an ``enum.Enum``: enum is not lean
    (docs/architecture.md).
    """

    __slots__ = ("label", "meaning", "name", "severity")
    name: str
    severity: int
    label: str
    meaning: str

    def __init__(self, name: str, severity: int, label: str, meaning: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "severity", severity)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "meaning", meaning)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Status is immutable")

    def __repr__(self) -> str:
        return f"<status {self.name}>"

    def __str__(self) -> str:
        return self.name

    def __reduce__(self) -> tuple[object, ...]:
        return (by_name, (self.name,))  # copies and pickles are the singleton itself

    @property
    def restorable(self) -> bool:
        """True for fine and rewrite: a restore here works (with criu-aio for rewrite)."""
        return self.severity <= 1


FINE = Status("fine", 0, "fine", "CRIU alone restores it")
REWRITE = Status("rewrite", 1, "needs rewrite", "restores with criu-aio (it rewrites nr_req)")
BUDGET = Status("budget", 2, "over AIO budget", "not now: fs.aio-max-nr cannot hold the rings")
IMPOSSIBLE = Status(
    "impossible", 3, "impossible here", "cannot restore here: no nr_req recreates the ring"
)
ERROR = Status("error", 4, "error", "undecided: the kernel refused in an unexpected way")

ALL: tuple[Status, ...] = (FINE, REWRITE, BUDGET, IMPOSSIBLE, ERROR)
_BY_NAME = {s.name: s for s in ALL}


def by_name(name: str) -> Status:
    """The status called *name* (KeyError for anything else)."""
    return _BY_NAME[name]


def worst(statuses: Iterable[Status], default: Status = FINE) -> Status:
    """The most severe of *statuses* (*default* when there are none)."""
    found = default
    first = True
    for s in statuses:
        if first or s.severity > found.severity:
            found, first = s, False
    return found


def best(statuses: Iterable[Status], default: Status = ERROR) -> Status:
    """The least severe of *statuses* (*default* when there are none)."""
    found = default
    first = True
    for s in statuses:
        if first or s.severity < found.severity:
            found, first = s, False
    return found
