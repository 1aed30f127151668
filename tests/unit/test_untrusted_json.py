"""Reading untrusted JSON: its shortcuts (counting brackets, skipping the scrub of a body that
cannot hold an unstorable string) must answer exactly what the full walk would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.inbound.untrusted import MAX_DEPTH, UNSTORABLE, UntrustedInputError, load_json, scrub, scrubbed_json

# Any text, lone surrogates and NULs included (often: they are what the shortcuts must not miss).
SPECIAL = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\\", '"', "é", "\u2028"])
# Joined from a list: st.text() leaves lone surrogates out.
TEXT = st.lists(SPECIAL | st.characters(exclude_categories=()), max_size=8).map("".join)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4))


# JSON may come in any of these; json.loads tells them apart by their NUL bytes and BOMs.
ENCODINGS = st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])


def _encoded(value: Any, ascii_only: bool, encoding: str) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode(encoding, errors="surrogatepass")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, child in value.items() for text in (key, *_strings(child))]
    if isinstance(value, list):
        return [text for child in value for text in _strings(child)]
    return []


@given(VALUES, st.booleans(), ENCODINGS)
def test_a_scrubbed_body_is_the_body_with_every_unstorable_character_replaced(
    value: Any, ascii_only: bool, encoding: str
) -> None:
    raw = _encoded(value, ascii_only, encoding)
    scrubbed = scrubbed_json(raw)
    assert scrubbed == scrub(load_json(raw))
    assert not any(UNSTORABLE.search(text) for text in _strings(scrubbed))


def _nested(depth: int, inner: Any) -> Any:
    for level in range(depth - 1):
        inner = [inner] if level % 2 else {"k": inner}
    return inner


@given(st.integers(1, MAX_DEPTH + 5), st.sampled_from([[], {}, "[{", 1]), st.booleans())
def test_nesting_is_refused_exactly_beyond_the_limit(depth: int, inner: Any, as_text: bool) -> None:
    # Brackets inside strings count towards the shortcut's bound, never towards the depth.
    raw = json.dumps(_nested(depth, inner))
    deeper = depth + (1 if isinstance(inner, list | dict) else 0) - 1
    if deeper > MAX_DEPTH:
        with pytest.raises(UntrustedInputError):
            load_json(raw if as_text else raw.encode())
    else:
        assert load_json(raw if as_text else raw.encode()) == json.loads(raw)


def test_brackets_in_strings_do_not_make_a_shallow_body_too_deep() -> None:
    raw = json.dumps({"resultJson": "[" * 100 + "{" * 100})
    assert load_json(raw.encode()) == json.loads(raw)
