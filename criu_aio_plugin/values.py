"""Frozen value objects without the dataclasses module (interposer, image reading).

Why not @dataclass(frozen=True): ``import dataclasses`` pulls in ``inspect``
and costs about 13 ms here, and ``typing`` another 8 ms, on a path (``criu-aio
swrk`` handing a VERSION request to CRIU) whose whole budget is 10 ms. These
classes give the same contract: fields in ``__slots__``, set once in
``__init__`` through ``_freeze``, equality, hashing and repr by fields.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Self


class _ByFields:
    """Equality and repr by the fields a subclass lists in ``__slots__``."""

    __slots__ = ()

    def _names(self) -> tuple[str, ...]:
        names: tuple[str, ...] = type(self).__slots__
        return names

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._names())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _ByFields)
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names())
        return f"{type(self).__name__}({body})"


class Value(_ByFields):
    """Base of immutable values: subclasses list their fields in ``__slots__``."""

    __slots__ = ()

    def _freeze(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (tried to set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (tried to delete {name})")

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._fields()))

    def as_dict(self) -> dict[str, object]:
        """The fields by name (``dataclasses.asdict`` for a flat value)."""
        return {name: getattr(self, name) for name in self._names()}

    def replace(self, **changes: object) -> Self:
        """A copy with *changes* (``dataclasses.replace``; ``__init__`` takes the fields)."""
        return type(self)(**{**self.as_dict(), **changes})


class Record(_ByFields):
    """Base of mutable records: fields in ``__slots__``, equality and repr by fields.

    Like a plain ``@dataclass`` (eq, repr, unhashable), without the import.
    """

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable
