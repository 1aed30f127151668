"""Small composable checks of create bodies. Each returns a message naming the bad field, or None.

The emulator validates as strictly as the docs describe, so a client that sends a wrong field name or
value finds out here rather than against the real API.
"""

from collections.abc import Callable, Iterable
from typing import Any

from app.emulator.wire import Problem

Check = Callable[[dict[str, Any]], str | None]


def kie_validator(rules: Iterable[Check]) -> Callable[[Any], Problem | None]:
    """Kie reports any invalid create body as body code 422 with a message."""
    rules = tuple(rules)

    def validate(body: Any) -> Problem | None:
        problem = first_problem(body, rules)
        return None if problem is None else Problem(422, problem)

    return validate


def first_problem(body: Any, checks: Iterable[Check]) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    return next((problem for check in checks if (problem := check(body)) is not None), None)


def _present(body: dict[str, Any], key: str) -> bool:
    # Clients commonly send null or "" for "not set"; the real APIs then apply the default.
    return body.get(key) not in (None, "")


def _is_http_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _same(value: Any, allowed: Any) -> bool:
    # Strict about types: JSON true == 1 and 2.0 == 2 in Python, but neither is a valid enum value.
    return value == allowed and type(value) is type(allowed)


def text(key: str, required: bool = False) -> Check:
    def check(body: dict[str, Any]) -> str | None:
        value = body.get(key)
        if not required and not _present(body, key):
            return None
        if isinstance(value, str) and value.strip():
            return None
        return f"{key} is required and must be a non-empty string" if required else f"{key} must be a non-empty string"

    return check


def choice(key: str, allowed: tuple[Any, ...], required: bool = False) -> Check:
    listed = ", ".join(str(value) for value in allowed)

    def check(body: dict[str, Any]) -> str | None:
        if not _present(body, key):
            return f"{key} is required and must be one of {listed}" if required else None
        if any(_same(body[key], value) for value in allowed):
            return None
        return f"{key} must be one of {listed}"

    return check


def boolean(key: str) -> Check:
    def check(body: dict[str, Any]) -> str | None:
        return None if body.get(key) is None or isinstance(body[key], bool) else f"{key} must be a boolean"

    return check


def url(key: str) -> Check:
    def check(body: dict[str, Any]) -> str | None:
        return None if not _present(body, key) or _is_http_url(body[key]) else f"{key} must be an http(s) URL"

    return check


def url_list(key: str, max_items: int) -> Check:
    def check(body: dict[str, Any]) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if isinstance(value, list) and len(value) <= max_items and all(_is_http_url(item) for item in value):
            return None
        return f"{key} must be a list of at most {max_items} http(s) URLs"

    return check


def obj(key: str) -> Check:
    def check(body: dict[str, Any]) -> str | None:
        return None if isinstance(body.get(key), dict) else f"{key} is required and must be an object"

    return check


def nested(key: str, inner: Check) -> Check:
    """Apply `inner` to body[key] (already checked to be an object), naming fields as key.field."""

    def check(body: dict[str, Any]) -> str | None:
        problem = inner(body[key])
        return None if problem is None else f"{key}.{problem}"

    return check
