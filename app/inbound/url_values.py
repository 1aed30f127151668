"""Values clients put in URLs (query parameters, path segments, cursors), each checked
against what the database can hold, so that a bad one is a 400 naming it, never a failed query."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from app.errors import BadRequest

# Integer columns are 32-bit on PostgreSQL: a larger id cannot exist, and cannot be bound.
MAX_ID = 2**31 - 1
DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() also takes '²' and '١'
# imagehook's ids are "ih_" + URL-safe base64; an id of any other shape names no task.
TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def integer(raw: str | None, low: int = 0, high: int = MAX_ID) -> int | None:
    """raw as an integer in [low, high]; None if it is anything else."""
    if raw is None or not DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def is_task_id(raw: str) -> bool:
    return TASK_ID.fullmatch(raw) is not None


def task_id(raw: str, name: str = "taskId") -> str:
    if not is_task_id(raw):
        raise BadRequest(f"{name} is not a valid task id")
    return raw


def timestamp(name: str, raw: str) -> datetime:
    """An ISO 8601 date-time with a time zone, in UTC (SQLite compares times as UTC text)."""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise BadRequest(f"{name} must include a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a time before year 1 in UTC
        raise BadRequest(f"{name} is out of range: it must fall within the years 1 to 9999 in UTC") from None
