"""Logs: `LOG_FORMAT=text|json`, `LOG_LEVEL`, and the context every line carries.

A request's id (its sane `X-Request-ID`, else a new one), the calling key's id and the task a
line is about live in context variables: every line logged while handling the request, or the
task, carries them, in text as ` [request=... key=... task=...]` and in JSON as fields. The JSON
formatter is python-json-logger's. Nothing secret is ever a field: keys are logged by id,
callback paths by their route template.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
KEY_ID: ContextVar[int | None] = ContextVar("key_id", default=None)
TASK_ID: ContextVar[str | None] = ContextVar("task_id", default=None)
CONTEXT = (("request", REQUEST_ID), ("key", KEY_ID), ("task", TASK_ID))
# What a client may name its request by: short, and nothing a log line or a header could be broken with.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
PROCESS_PREFIX = secrets.token_hex(4)
REQUEST_COUNT = itertools.count()
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
JSON_FIELDS = ("asctime", "levelname", "name", "message")
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


def request_id(given: bytes | None) -> str:
    """The client's X-Request-ID if it is sane, else a new one."""
    if given is not None:
        text = given.decode("latin-1")
        if SANE_REQUEST_ID.fullmatch(text):
            return text
    # A random prefix per process and a count: unique across replicas, and no system call per request.
    return f"{PROCESS_PREFIX}{next(REQUEST_COUNT) & 0xFFFFFFFF:08x}"


@contextmanager
def about_task(task_id: str) -> Iterator[None]:
    """Every line logged inside carries this task's id."""
    token = TASK_ID.set(task_id)
    try:
        yield
    finally:
        TASK_ID.reset(token)


class WithContext(logging.Filter):
    """Puts the context variables on each record: as fields, and as one text suffix."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = {name: var.get() for name, var in CONTEXT}
        for name, value in found.items():
            setattr(record, f"{name}_id", value)
        present = " ".join(f"{name}={value}" for name, value in found.items() if value is not None)
        record.context = f" [{present}]" if present else ""
        return True


class JsonLines(JsonFormatter):
    """One JSON object a line: time, level, logger, message, the context ids that are set, and extras."""

    def add_fields(self, log_data: dict[str, object], record: logging.LogRecord, message_dict: dict) -> None:  # type: ignore[override]
        super().add_fields(log_data, record, message_dict)
        log_data.pop("context", None)
        for name, _ in CONTEXT:
            if log_data.get(f"{name}_id") is None:
                log_data.pop(f"{name}_id", None)


def configure(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(WithContext())
    if log_format == "json":
        fields = " ".join(f"%({name})s" for name in JSON_FIELDS)
        handler.setFormatter(JsonLines(fields, rename_fields=JSON_NAMES))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def chosen(env: Mapping[str, str]) -> tuple[str, str]:
    """LOG_FORMAT and LOG_LEVEL from env; ValueError names a bad one."""
    log_format = (env.get("LOG_FORMAT") or "text").strip().lower()
    level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be text or json, got {env['LOG_FORMAT']!r}")
    if level not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {env['LOG_LEVEL']!r}")
    return log_format, level
