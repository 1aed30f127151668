"""What an operator does with client keys after creating them: list, inspect, rename, expire, revoke.

A change here reaches every replica within the key cache's TTL (app/reads/key_cache.py): a
replica that found the key valid keeps it for at most that long before asking the database
again. Revoking or expiring a key only stops new requests made with it: its tasks run on,
and their webhooks are still delivered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.tables import ApiKey
from app.deps import Deps
from app.errors import NotFound
from app.keys import LIMITS
from app.tasks import limits


@dataclass(frozen=True)
class KeySummary:
    """A key as an operator sees it: never the key itself, only the prefix it starts with."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    limits: dict[str, float | None]

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_json(self, now: datetime) -> dict[str, Any]:
        fields = asdict(self) | {"status": self.status(now)}
        return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in fields.items()}


def summary(row: ApiKey) -> KeySummary:
    return KeySummary(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        limits={name: getattr(row, name) for name in LIMITS},
    )


async def list_keys(deps: Deps) -> list[KeySummary]:
    async with deps.sessions() as session:
        rows = (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars().all()
    return [summary(row) for row in rows]


async def key_details(deps: Deps, key_id: int) -> dict[str, Any]:
    """The key's summary, with its usage this UTC day and month and its tasks in flight."""
    now = deps.clock()
    day_start, month_start = limits.budget_periods(now)
    async with deps.sessions() as session:
        row = await _key(session, key_id)
        usage = {
            "in_flight": await limits.in_flight(session, key_id),
            "credits_today": await limits.credits_used(session, key_id, day_start),
            "credits_this_month": await limits.credits_used(session, key_id, month_start),
        }
    return summary(row).as_json(now) | {"usage": usage}


async def rename_key(deps: Deps, key_id: int, name: str) -> KeySummary:
    async with deps.write() as session:
        row = await _key(session, key_id)
        row.name = name
        return summary(row)


async def revoke_key(deps: Deps, key_id: int) -> KeySummary:
    """Revoked for good; revoking a revoked key keeps its first revocation time."""
    async with deps.write() as session:
        row = await _key(session, key_id)
        row.revoked_at = row.revoked_at or deps.clock()
        return summary(row)


async def set_expiry(deps: Deps, key_id: int, expires_in: timedelta | None) -> KeySummary:
    """Expire the key that long from now; None: never."""
    async with deps.write() as session:
        row = await _key(session, key_id)
        row.expires_at = None if expires_in is None else deps.clock() + expires_in
        return summary(row)


async def _key(session: AsyncSession, key_id: int) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"No API key #{key_id}")
    return row
