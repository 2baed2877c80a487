"""cjson (json's C half, without importing json) gives json's own results."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from criu_aio_plugin import cjson

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_docs = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.fuzz
@given(_docs, st.booleans())
def test_dumps_and_loads_match_json(doc: object, sort_keys: bool) -> None:
    text = cjson.dumps(doc, sort_keys=sort_keys)
    assert text == json.dumps(doc, separators=(",", ":"), sort_keys=sort_keys)
    assert repr(cjson.loads(text)) == repr(json.loads(text))  # repr: NaN != NaN


@pytest.mark.parametrize("text", ["", "{", '{"a":1} x', "[1,]", "nul", '"\\x"'])
def test_malformed_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        cjson.loads(text)


def test_what_json_refuses_cjson_refuses() -> None:
    with pytest.raises(TypeError):
        cjson.dumps({"a": b"bytes"})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        cjson.dumps(loop)
    assert cjson.loads(' \n{"k": [1, 2.5, null]}\n') == {"k": [1, 2.5, None]}
