"""The usage ledger: credits per task, summed per key by model or by day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from app.db.tables import Task
from app.deps import Deps
from app.errors import BadRequest
from app.inbound.url_values import timestamp

GROUPS = ("model", "day", "key")


def _group_column(deps: Deps, group_by: str) -> ColumnElement[Any]:
    if group_by == "model":
        return Task.model
    if group_by == "key":
        return Task.api_key_id
    if deps.engine.dialect.name == "postgresql":
        return cast(func.timezone("UTC", Task.created_at), Date)
    return func.date(Task.created_at)  # SQLite stores UTC ISO text


async def summarize(deps: Deps, params: dict[str, str], api_key_id: int | None) -> dict[str, Any]:
    """Tasks and credits in [from, to) (default: the last 30 days), for one key or all."""
    group_by = params.get("groupBy", "model")
    if group_by not in GROUPS or (group_by == "key" and api_key_id is not None):
        raise BadRequest("groupBy must be model or day")
    now = deps.clock()
    start = timestamp("from", params["from"]) if "from" in params else now - timedelta(days=30)
    end = timestamp("to", params["to"]) if "to" in params else now
    group = _group_column(deps, group_by)
    stmt = (
        select(
            group,
            func.count(),
            func.coalesce(func.sum(Task.credits), 0.0),
            func.coalesce(func.sum(Task.credit_reserve).filter(Task.credits.is_(None)), 0.0),
        )
        .where(Task.created_at >= start, Task.created_at < end)
        .group_by(group)
        .order_by(group)
    )
    if api_key_id is not None:
        stmt = stmt.where(Task.api_key_id == api_key_id)
    async with deps.sessions() as session:
        rows = (await session.execute(stmt)).all()
    groups = [
        {group_by: str(key), "tasks": count, "credits": float(credits), "reserved": float(reserved)}
        for key, count, credits, reserved in rows
    ]
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "groupBy": group_by,
        "total": {
            "tasks": sum(g["tasks"] for g in groups),
            "credits": sum(g["credits"] for g in groups),
            "reserved": sum(g["reserved"] for g in groups),
        },
        "groups": groups,
    }
