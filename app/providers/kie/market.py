"""Kie.ai market jobs: reading recordInfo records and callbacks (`state`, `resultJson` as a string)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from app.inbound.untrusted import finite_number, is_upstream_id, load_json
from app.tasks.domain import State, Update

# Two weeks: no generation runs longer, so a larger costTime is nonsense, not a duration (and would not fit).
MAX_COST_MS = 14 * 86400 * 1000
PLAUSIBLE_MS = (1_577_836_800_000, 4_102_444_800_000)  # 2020-01-01 and 2100-01-01
KIE_STATES = {
    "waiting": State.PENDING,
    "queuing": State.PENDING,
    "generating": State.PROCESSING,
    "success": State.SUCCESS,
    "fail": State.FAIL,
}


def read_query_record(data: dict[str, Any]) -> Update:
    """recordInfo's `data` (costTime in milliseconds)."""
    return read_record(data, cost_time_unit_ms=1)


def read_record(data: dict[str, Any], *, cost_time_unit_ms: int) -> Update:
    """A recordInfo `data` object or a callback's `data`, in imagehook's terms.

    costTime is milliseconds in recordInfo but seconds in callbacks: the caller says which.
    """
    state = KIE_STATES.get(str(data.get("state", "")).lower())
    if state is None:
        raise ValueError(f"unknown Kie state {data.get('state')!r}")
    cost = finite_number(data.get("costTime"))
    cost_ms = None if cost is None else cost * cost_time_unit_ms
    cost_ms = round(cost_ms) if cost_ms is not None and 0 <= cost_ms <= MAX_COST_MS else None
    done = {"cost_time_ms": cost_ms, "credits": _credits(data), "completed_at": _moment(data.get("completeTime"))}
    if state is State.SUCCESS:
        return Update(state, image_urls=_result_urls(data.get("resultJson")), **done)
    if state is State.FAIL:
        fail_code = str(data.get("failCode") or "") or None
        fail_msg = str(data.get("failMsg") or "Generation failed")
        return Update(state, fail_code=fail_code, fail_msg=fail_msg, **done)
    return Update(state)


def _moment(epoch_ms: Any) -> datetime | None:
    """Kie's milliseconds since the epoch, if they make a plausible time (after 2020, before 2100)."""
    value = finite_number(epoch_ms)
    if value is None or not PLAUSIBLE_MS[0] < value < PLAUSIBLE_MS[1]:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


def _credits(data: dict[str, Any]) -> float | None:
    """Credits charged: `creditsConsumed` in current docs, `consumeCredits` in older ones."""
    for name in ("creditsConsumed", "consumeCredits"):
        value = finite_number(data.get(name))
        if value is not None and value >= 0:
            return value
    return None


def read_callback(body: Any) -> tuple[str, Update]:
    """A market callback body -> (Kie task id, update). Raises ValueError on a malformed body."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise ValueError("callback body has no data object")
    data = body["data"]
    upstream_id = callback_task_id(body)
    if not data.get("state"):
        # Some senders omit state; the envelope code still tells success from failure.
        data = {**data, "state": "success" if body.get("code") == 200 else "fail"}
        data.setdefault("failMsg", body.get("msg") or body.get("message"))
    return upstream_id, replace(read_record(data, cost_time_unit_ms=1000), upstream_id=upstream_id)


def callback_task_id(body: Any) -> str:
    """Kie's docs name the id three ways (data.task_id, data.taskId, taskId): take the first present."""
    data = body.get("data") if isinstance(body, dict) else None
    for candidate in (
        data.get("task_id") if isinstance(data, dict) else None,
        data.get("taskId") if isinstance(data, dict) else None,
        body.get("taskId") if isinstance(body, dict) else None,
    ):
        if isinstance(candidate, str) and candidate:
            if not is_upstream_id(candidate):
                raise ValueError("callback body carries a malformed task id")
            return candidate
    raise ValueError("callback body carries no task id")


def _result_urls(result_json: Any) -> tuple[str, ...]:
    if isinstance(result_json, str):
        try:
            result_json = load_json(result_json) if result_json else {}
        except ValueError:
            raise ValueError("resultJson is not valid JSON") from None
    urls = result_json.get("resultUrls") if isinstance(result_json, dict) else None
    if not isinstance(urls, list):
        return ()
    return tuple(url for url in urls if isinstance(url, str))
