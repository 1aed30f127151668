"""Typed request parameters: what a model accepts for one field, and how it is sent upstream.

Pure: `Param.convert` either returns the upstream value or raises ValueError saying, in
words a client understands, what the value must be.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

Kind = Literal["enum", "int", "number", "bool", "string", "url"]


@dataclass(frozen=True)
class Param:
    upstream: str
    kind: Kind
    values: Mapping[Any, Any] | None = None  # accepted value -> value sent upstream
    low: float | None = None  # smallest number, or shortest string
    high: float | None = None  # largest number, or longest string
    default: Any = None  # request-level value used when the client sends none
    as_string: bool = False  # Kie wants some numbers as strings (num_images: "1")

    def convert(self, value: Any) -> Any:
        converted = _CHECKS[self.kind](self, value)
        return str(converted) if self.as_string else converted

    def describe(self) -> dict[str, Any]:
        """The parameter as GET /api/images/models shows it."""
        info: dict[str, Any] = {"type": self._json_type()}
        if self.values is not None:
            info["values"] = list(self.values)
        if self.low is not None:
            info["min" if self.kind != "string" else "minLength"] = self.low
        if self.high is not None:
            info["max" if self.kind != "string" else "maxLength"] = self.high
        if self.default is not None:
            info["default"] = self.default
        return info

    def _json_type(self) -> str:
        if self.kind == "enum" and self.values and all(isinstance(v, int | float) for v in self.values):
            return "number"
        return {"int": "integer", "number": "number", "bool": "boolean"}.get(self.kind, "string")


def _enum(param: Param, value: Any) -> Any:
    assert param.values is not None
    if not isinstance(value, str | int | float) or isinstance(value, bool) or value not in param.values:
        raise ValueError(f"must be one of: {', '.join(str(v) for v in param.values)}")
    return param.values[value]


def _int(param: Param, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer{_range(param)}")
    return _within(param, value)


def _number(param: Param, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number{_range(param)}")
    if not math.isfinite(value):  # json.loads accepts NaN and Infinity; providers do not
        raise ValueError(f"must be{_range(param)}" if _range(param) else "must be a finite number")
    return _within(param, value)


def _bool(param: Param, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _string(param: Param, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if param.high is not None and len(value) > param.high:
        raise ValueError(f"must be at most {_plain(param.high)} characters")
    return value


def _url(param: Param, value: Any) -> str:
    if not isinstance(value, str) or not is_absolute_http_url(value):
        raise ValueError("must be an absolute http(s) URL")
    return value


def _within(param: Param, value: Any) -> Any:
    if (param.low is not None and value < param.low) or (param.high is not None and value > param.high):
        raise ValueError(f"must be{_range(param)}")
    return value


def _range(param: Param) -> str:
    if param.low is not None and param.high is not None:
        return f" between {_plain(param.low)} and {_plain(param.high)}"
    return ""


def _plain(bound: float) -> str:
    """2147483647 and 7.5 as written, not 2.14748e+09."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


_CHECKS = {"enum": _enum, "int": _int, "number": _number, "bool": _bool, "string": _string, "url": _url}


def enum(upstream: str, values: str | Mapping[Any, Any], default: Any = None) -> Param:
    """An enum; `values` is a space-separated list sent as is, or a mapping to upstream values."""
    table = {v: v for v in values.split()} if isinstance(values, str) else dict(values)
    return Param(upstream, "enum", table, default=default)


def integer(upstream: str, low: int, high: int, *, as_string: bool = False, default: int | None = None) -> Param:
    return Param(upstream, "int", low=low, high=high, as_string=as_string, default=default)


def number(upstream: str, low: float, high: float) -> Param:
    return Param(upstream, "number", low=low, high=high)


def flag(upstream: str) -> Param:
    return Param(upstream, "bool")


def text(upstream: str, max_length: int) -> Param:
    return Param(upstream, "string", high=max_length)


def url(upstream: str) -> Param:
    return Param(upstream, "url")


WHITESPACE = re.compile(r"\s")  # exactly str.isspace's characters, found in C


def is_absolute_http_url(value: str) -> bool:
    if WHITESPACE.search(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
