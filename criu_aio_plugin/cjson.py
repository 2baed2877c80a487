"""json.loads / compact json.dumps through json's C half, without importing json.

Why: ``import json`` loads its pure-Python decoder and encoder and ``re``
(~2.5 ms); on ``criu-aio swrk``'s restore path the per-boot cache is read (and
written after probing) and a rewrite stores its journal. ``_json`` (what
json.loads/json.dumps run on CPython) needs neither. Same results as
``json.loads(text)`` and ``json.dumps(obj, separators=(",", ":"),
sort_keys=...)``; anything else (no ``_json``: not CPython) goes to json itself.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    # Imported here, not when first used: the service imports everything as
    # root before it acts as a client who may not read this Python's files.
    from _json import encode_basestring_ascii, make_encoder, make_scanner

    _HAVE_C = True
except ImportError:  # pragma: no cover - not CPython
    _HAVE_C = False


class _ScanOptions:
    """What json.JSONDecoder hands its C scanner: the defaults of json.loads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def loads(text: str) -> Any:
    """``json.loads(text)``; raises ValueError on malformed text."""
    if not _HAVE_C:  # pragma: no cover
        import json

        return json.loads(text)
    text = text.strip(" \t\n\r")
    try:
        doc, end = make_scanner(_ScanOptions)(text, 0)  # type: ignore[arg-type]
    except StopIteration as err:
        raise ValueError(f"malformed JSON at {err.value}") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON at {end}")
    return doc


def _not_serializable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: object, *, sort_keys: bool = False) -> str:
    """``json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys)``."""
    if not _HAVE_C:  # pragma: no cover
        import json

        return json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys)
    # The arguments json.encoder.JSONEncoder.iterencode gives the C encoder:
    # markers (cycle check), default, string encoder, indent, key and item
    # separators, sort_keys, skipkeys, allow_nan.
    encode = make_encoder(
        {},
        _not_serializable,
        encode_basestring_ascii,
        None,
        ":",
        ",",
        sort_keys,
        False,
        True,
    )
    return "".join(encode(obj, 0))
