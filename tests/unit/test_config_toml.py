"""The lean TOML reader agrees with tomllib wherever it answers, and answers for the subset.

tomllib is the reference: the lean reader exists only because importing tomllib
costs about 6 ms on the swrk hand-over path. Whatever text the lean reader
accepts, tomllib must accept and read the same; whatever it declines goes to
tomllib (``parse_toml``), so the two can only differ in speed.
"""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from criu_aio_plugin.config import _NotLean, parse_lean, parse_toml

BARE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
# Characters that matter to TOML's grammar, plus controls and non-ASCII.
TRICKY = " \t\r\n#=\"'\\.,[]{}+-_0123456789abcdeuUntrfslx\x00\x01\x08\x0b\x1f\x7f\x85é\u2028😀"

ws = st.text(" \t", max_size=2)
keys = st.one_of(st.text(BARE, min_size=1, max_size=6), st.text(TRICKY, max_size=4))
VALID_ESCAPES = ["\\n", "\\t", "\\\\", '\\"', "\\b", "\\f", "\\r", "\\u00e9", "\\U0001F600"]
BAD_ESCAPES = ["\\ud800", "\\x41", "\\e", "\\u12", "\\U110000", "\\", "\\ "]
escapes = st.sampled_from([*VALID_ESCAPES, *BAD_ESCAPES])
basic = st.lists(st.one_of(st.text(TRICKY.replace('"', ""), max_size=3), escapes), max_size=4)
values = st.one_of(
    basic.map(lambda parts: '"' + "".join(parts) + '"'),
    st.text(TRICKY.replace("'", ""), max_size=6).map(lambda s: f"'{s}'"),
    st.sampled_from(["true", "false", "True", "0", "-0", "+7", "01", "1_000", "1.5", "inf"]),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(['"""x"""', "'''y'''", '"unterminated', "[1, 2]", "{a = 1}", "1979-05-27"]),
    st.text(TRICKY, max_size=6),
)
comments = st.one_of(st.just(""), st.text(TRICKY.replace("\n", ""), max_size=6).map("#".__add__))
assignment = st.builds(
    lambda k, w1, w2, v, w3, c: f"{k}{w1}={w2}{v}{w3}{c}", keys, ws, ws, values, ws, comments
)
line = st.one_of(assignment, comments, ws, st.text(TRICKY, max_size=8), st.just("[table]"))
documents = st.builds(
    lambda lines, ends: "".join(ln + e for ln, e in zip(lines, ends, strict=False)),
    st.lists(line, max_size=6),
    st.lists(st.sampled_from(["\n", "\r\n", "\r", ""]), min_size=6, max_size=6),
)


def _agree(text: str) -> None:
    try:
        lean = parse_lean(text)
    except _NotLean:
        return
    try:
        reference = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # pragma: no cover - the failure being tested
        pytest.fail(f"lean reader accepted what tomllib rejects ({err}): {text!r}")
    assert lean == reference, text
    assert [type(v) for v in lean.values()] == [type(v) for v in reference.values()]


@settings(max_examples=4000, deadline=None)
@given(documents)
@example('criu = "/opt/criu-aio/criu/bin/criu"\nkernel = "sim:cpus=64" # a bigger host\n')
@example("a = 1\r")  # a CR that ends no line
@example('a = "x"\na = "y"\n')  # duplicate key
@example("a = ''\nb = \"\"\n")
def test_lean_reader_agrees_with_tomllib_on_toml_like_text(text: str) -> None:
    _agree(text)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=40))
def test_lean_reader_agrees_with_tomllib_on_any_text(text: str) -> None:
    _agree(text)


# The subset the documentation uses: the lean reader must answer these itself.
safe_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\"'\\")
subset_values = st.one_of(
    st.text(safe_chars, max_size=8).map(lambda s: f'"{s}"'),
    st.text(safe_chars, max_size=8).map(lambda s: f"'{s}'"),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.integers(-(10**17), 10**17).map(str),
    st.sampled_from(['"\\n\\t\\\\\\"\\u00e9\\U0001F600"', '"tab\there"']),
)
subset_docs = st.dictionaries(st.text(BARE, min_size=1, max_size=8), subset_values, max_size=6)


@settings(max_examples=1000, deadline=None)
@given(
    subset_docs,
    st.sampled_from(["\n", "\r\n"]),
    ws,
    st.one_of(st.just(""), st.text(safe_chars, max_size=8).map("#".__add__)),
)
def test_the_documented_subset_never_needs_tomllib(
    doc: dict[str, str], end: str, pad: str, comment: str
) -> None:
    body = "".join(f"{pad}{k}{pad}={pad}{v}{pad}{comment}{end}" for k, v in doc.items())
    text = "# criu-aio" + end + body
    assert parse_lean(text) == tomllib.loads(text)


def test_outside_the_subset_tomllib_decides() -> None:
    assert parse_toml("[section]\nkey = 1\n") == {"section": {"key": 1}}
    assert parse_toml('a = """multi\nline"""\n') == {"a": "multi\nline"}
    with pytest.raises(ValueError, match="line 1"):
        parse_toml("a = \n")
    with pytest.raises(ValueError):
        parse_toml('a = "x"\na = "y"\n')  # a duplicate key is not TOML
