"""Reading what arrives from outside: JSON of bounded depth, and text the database can store.

Clients' values that cannot be stored or sent upstream are refused (`unstorable`); what a
provider sends is cleaned instead (`scrub`), since refusing it would only make it come again.
PostgreSQL text cannot hold U+0000, and no UTF-8 encoder takes a lone surrogate (which
JSON's \\ud800 escapes can produce).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # far beyond any body this service reads; json would recurse until RecursionError
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What a provider's task id may look like: printable ASCII, as long as the column allows.
UPSTREAM_ID = re.compile(r"[\x21-\x7e]{1,100}")
REPLACEMENT = "\ufffd"


class UntrustedInputError(ValueError):
    """The input cannot be read or stored; the message says where and why."""


def load_json(raw: bytes | str) -> Any:
    """json.loads, refusing nesting deeper than MAX_DEPTH (ValueError covers malformed JSON)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise UntrustedInputError(f"JSON is nested deeper than {MAX_DEPTH} levels") from None
    if _brackets(raw) > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise UntrustedInputError(f"JSON is nested deeper than {MAX_DEPTH} levels")
    return value


def unstorable(value: Any) -> str | None:
    """Where the first string that cannot be stored is ('options.style', 'imageInput[2]', a key), and why."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if problem := _text_problem(item):
                return f"{path or 'value'} {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if problem := _text_problem(key):
                    return f"a field name {problem}"
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def scrubbed_json(raw: bytes) -> Any:
    """load_json(raw), scrubbed; a body that spells no NUL, no \\u escape and no UTF-8 lead byte
    of a surrogate (0xED) cannot hold an unstorable string, and is not walked."""
    value = load_json(raw)
    return scrub(value) if b"\\u" in raw or b"\x00" in raw or b"\xed" in raw else value


def scrub(value: Any) -> Any:
    """value with every unstorable character in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(key): scrub(child) for key, child in value.items()}
    if isinstance(value, list):
        return [scrub(child) for child in value]
    return value


def clean_text(text: str, limit: int | None = None) -> str:
    """text as it can be stored: unstorable characters replaced, cut to `limit` characters."""
    cleaned = UNSTORABLE.sub(REPLACEMENT, text) if UNSTORABLE.search(text) else text
    return cleaned if limit is None else cleaned[:limit]


def finite_number(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else (booleans, NaN, 1e999, a 400-digit integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def is_upstream_id(value: object) -> bool:
    return isinstance(value, str) and UPSTREAM_ID.fullmatch(value) is not None


def _text_problem(text: str) -> str | None:
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000)"
    return f"contains a lone UTF-16 surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode text"


def _brackets(raw: bytes | str) -> int:
    """How many arrays and objects the text could open at most: a bound on its nesting, counted in C."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False
