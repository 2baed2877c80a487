"""Values and records declared like dataclasses, without importing dataclasses.

Why not ``@dataclass(frozen=True)``: ``import dataclasses`` pulls in ``inspect``
(~13 ms here) and ``typing`` another 8 ms, on a path (``criu-aio swrk`` handing
a VERSION request to CRIU) whose whole budget is 10 ms. This module is part of
the lean core (see docs/architecture.md): it imports nothing but builtins.

A class lists its fields as annotations, with optional defaults::

    class RingProbe(Value):
        nr_req: int
        ring_len: int = 0

The metaclass turns the annotations into ``__slots__`` and an ``__init__``
taking the fields in order (built on the first instantiation, so a class
that is imported but never built costs nothing), plus equality, hashing (for
``Value``), ``repr``, ``as_dict`` and ``replace``. ``ClassVar[...]`` annotations
are class attributes, not fields. A class that defines ``__init__`` itself keeps
it (it must set every field through ``object.__setattr__``).

For the type checker the metaclasses are ``typing.dataclass_transform``s, so
mypy --strict checks constructor calls like a dataclass's and refuses
assignments to a ``Value``'s fields; at run time there is one plain metaclass
(typing is never imported).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self, dataclass_transform


def _own_fields(namespace: dict[str, object]) -> list[str]:
    annotations = namespace.get("__annotations__", {})
    assert isinstance(annotations, dict)
    out = []
    for name, note in annotations.items():
        text = note if isinstance(note, str) else getattr(note, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar")):
            continue
        out.append(name)
    return out


class _FieldsMeta(type):
    """Builds ``__slots__``, ``__fields__`` and ``__defaults__`` from annotations."""

    __fields__: tuple[str, ...]
    __defaults__: dict[str, object]

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        inherited: tuple[str, ...] = ()
        defaults: dict[str, object] = {}
        for base in reversed(bases):
            inherited += tuple(f for f in getattr(base, "__fields__", ()) if f not in inherited)
            defaults.update(getattr(base, "__defaults__", {}))
        own = [f for f in _own_fields(namespace) if f not in inherited]
        for field in own:
            if field in namespace:
                defaults[field] = namespace.pop(field)
        fields = inherited + tuple(own)
        seen_default = False
        for field in fields:
            if field in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{name}: field {field!r} without a default follows one with")
        namespace.setdefault("__slots__", tuple(own))
        namespace["__fields__"] = fields
        namespace["__defaults__"] = defaults
        if "__init__" not in namespace:
            namespace["__init__"] = _first_init
        return super().__new__(mcls, name, bases, namespace)


def _first_init(self: Any, *args: object, **kwargs: object) -> None:
    """Build the class's real ``__init__``, install it, and run it."""
    owner: Any = next(c for c in type(self).__mro__ if c.__dict__.get("__init__") is _first_init)
    init = _make_init(owner)
    type.__setattr__(owner, "__init__", init)
    init(self, *args, **kwargs)


def _make_init(cls: _FieldsMeta) -> Any:
    """An ``__init__(self, field, ...)`` binding arguments to fields like a def would.

    Not generated source: the first ``compile()`` in a process costs ~0.9 ms
    (parser start-up, measured here), which every ``criu-aio swrk``
    pass-through paid for its first Value; binding by hand costs ~1 us more
    per instance instead.
    """
    fields = cls.__fields__
    defaults = cls.__defaults__
    count = len(fields)
    known = frozenset(fields)
    owner = cls.__qualname__
    setter = object.__setattr__

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if len(args) > count:
            raise TypeError(
                f"{owner}.__init__() takes {count + 1} positional arguments "
                f"but {len(args) + 1} were given"
            )
        for field, value in zip(fields, args, strict=False):
            setter(self, field, value)
        for field in fields[len(args) :]:
            if field in kwargs:
                setter(self, field, kwargs.pop(field))
            elif field in defaults:
                setter(self, field, defaults[field])
            else:
                raise TypeError(f"{owner}.__init__() missing required argument: {field!r}")
        if kwargs:
            extra = next(iter(kwargs))
            if extra in known:
                raise TypeError(f"{owner}.__init__() got multiple values for argument {extra!r}")
            raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {extra!r}")

    __init__.__qualname__ = f"{owner}.__init__"
    return __init__


class _ByFields:
    """Equality, repr and dict view by ``__fields__``."""

    __slots__ = ()
    __fields__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__fields__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _ByFields)
        return self._values() == other._values()

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__fields__)
        return f"{type(self).__name__}({body})"

    def as_dict(self) -> dict[str, object]:
        """The fields by name, in declaration order (``dataclasses.asdict`` for a flat value)."""
        return {name: getattr(self, name) for name in self.__fields__}

    def replace(self, **changes: object) -> Self:
        """A copy with *changes* (``dataclasses.replace``)."""
        unknown = set(changes) - set(self.__fields__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        return type(self)(**{**self.as_dict(), **changes})


if TYPE_CHECKING:

    @dataclass_transform(frozen_default=True, eq_default=True)
    class _ValueMeta(_FieldsMeta):
        pass

    @dataclass_transform(eq_default=True)
    class _RecordMeta(_FieldsMeta):
        pass

else:
    # One metaclass at run time (the two only tell the type checker which are frozen).
    _ValueMeta = _RecordMeta = _FieldsMeta


class Value(_ByFields, metaclass=_ValueMeta):
    """Base of immutable values: fields are annotations; hashable, compared by fields."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (tried to set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (tried to delete {name})")

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._values()))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), self._values())


class Record(_ByFields, metaclass=_RecordMeta):
    """Base of mutable records: like a plain ``@dataclass`` (eq, repr, unhashable)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable
