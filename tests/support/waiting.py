"""Waiting for a condition that another thread, process or server makes true."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL_S = 0.02


async def wait_until(
    probe: Callable[[], Any | Awaitable[Any]], done: Callable[[Any], bool] = bool, timeout: float = 10.0
) -> Any:
    """Call `probe` (plain or async) until `done` holds for its value or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(POLL_S)
