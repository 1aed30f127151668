"""Fault settings of the Kie emulator, and their validation when they arrive as JSON."""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Faults:
    """How the emulator misbehaves. Each job keeps the value current at its createTask call."""

    generate_s: float = 1.0
    callback_delay_s: float = 0.0
    drop_callbacks: float = 0.0
    duplicate_callbacks: int = 0
    # Probability that a job's callback is delivered once more (on top of duplicate_callbacks), like a
    # provider retrying a delivery it thought had failed.
    duplicate_rate: float = 0.0
    fail_rate: float = 0.0
    fail_msg: str = "Content policy violation"
    fail_code: str = "500"
    # Queues: each createTask call consumes one entry (HTTP errors first), so these are tuples
    # that the store replaces rather than mutates.
    create_errors: tuple[int, ...] = ()
    create_http_errors: tuple[int, ...] = ()
    create_delay_s: float = 0.0
    callback_before_response: bool = False
    seed: int | None = None
    # Account-wide, not per job: Kie's create limit [count, window_s] (a JSON list becomes a tuple, as with
    # the queues), and the balance that /api/v1/chat/credit starts from each time faults are set.
    create_rate_limit: tuple[int, int] | None = None
    starting_credits: float = 10000
    credits_per_image: float = 4  # what a successful job costs per image
    # Result files (/files/...) of jobs created while these are set.
    result_content_type: str | None = None
    result_size_bytes: int | None = None
    result_delay_s: float = 0.0

    def __post_init__(self) -> None:
        # Validating here (not only in from_dict) also protects Faults(...) built in Python code.
        delays = ("generate_s", "callback_delay_s", "create_delay_s", "result_delay_s")
        for name in (*delays, "starting_credits", "credits_per_image"):
            _check(name, _is_number(getattr(self, name)) and getattr(self, name) >= 0, "a number >= 0")
        for name in ("drop_callbacks", "duplicate_rate", "fail_rate"):
            _check(name, _is_number(getattr(self, name)) and 0 <= getattr(self, name) <= 1, "a number in 0..1")
        count = self.duplicate_callbacks
        _check("duplicate_callbacks", _is_int(count) and count >= 0, "an integer >= 0")
        _check("fail_msg", isinstance(self.fail_msg, str), "a string")
        _check("fail_code", isinstance(self.fail_code, str) and self.fail_code != "", "a non-empty string")
        _check("callback_before_response", isinstance(self.callback_before_response, bool), "a boolean")
        _check("seed", self.seed is None or _is_int(self.seed), "an integer or null")
        size = self.result_size_bytes
        _check("result_size_bytes", size is None or (_is_int(size) and size >= 0), "an integer >= 0 or null")
        _check("result_content_type", _is_header_value(self.result_content_type), "a non-empty header value or null")
        # Lists from JSON become tuples so the frozen value stays immutable.
        object.__setattr__(self, "create_errors", _codes("create_errors", self.create_errors, 400, 999))
        object.__setattr__(self, "create_http_errors", _codes("create_http_errors", self.create_http_errors, 400, 599))
        object.__setattr__(self, "create_rate_limit", _rate_limit(self.create_rate_limit))

    @classmethod
    def from_dict(cls, data: Any) -> "Faults":
        """Build from a JSON object; missing fields take defaults, unknown ones raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["create_errors"] = list(self.create_errors)
        data["create_http_errors"] = list(self.create_http_errors)
        if self.create_rate_limit is not None:
            data["create_rate_limit"] = list(self.create_rate_limit)
        return data


# Realistic body messages for Kie's error codes (facts §7), used for queued create_errors.
_ERROR_MESSAGES = {
    401: "You do not have access permissions",
    402: "Insufficient credits",
    404: "Not found",
    408: "Upstream timeout",
    422: "Validation error",
    429: "Rate limited",
    433: "Sub-key usage exceeds limit",
    455: "Service unavailable",
    500: "Server error",
    501: "Generation failed",
    505: "Feature disabled",
    550: "Connection denied, queue full",
}


def create_error_message(code: int) -> str:
    return _ERROR_MESSAGES.get(code, "Error")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `true` is never a meaningful count or code.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # JSON can carry NaN and Infinity, which would break the timing arithmetic.
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _check(name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"invalid fault field {name!r}: must be {expected}")


def _codes(name: str, value: Any, low: int, high: int) -> tuple[int, ...]:
    _check(name, isinstance(value, list | tuple), f"a list of integer codes in {low}..{high}")
    for code in value:
        _check(name, _is_int(code) and low <= code <= high, f"a list of integer codes in {low}..{high}")
    return tuple(value)


def _rate_limit(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = isinstance(value, list | tuple) and len(value) == 2 and all(_is_int(part) and part > 0 for part in value)
    _check("create_rate_limit", pair, "[count, window_s] with two positive integers, or null")
    return tuple(value)


def _is_header_value(value: Any) -> bool:
    # It becomes a Content-Type header verbatim, so it must be one line of printable ASCII.
    return value is None or (isinstance(value, str) and value.strip() != "" and value.isascii() and value.isprintable())
