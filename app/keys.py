"""Client API keys: created once, shown once, stored only as a hash."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import update

from app.db import queries
from app.db.outage import stale_if_error
from app.db.tables import ApiKey
from app.deps import Deps
from app.errors import NotFound, Unauthorized
from app.observe.logs import KEY_ID

log = logging.getLogger(__name__)

KEY_PREFIX = "ih_"
# How often each process writes down which keys it saw used: `last used` is this coarse, and
# costs one statement a minute per process however many requests came.
KEY_USE_WRITE_S = 60.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class NewKey:
    id: int
    key: str
    webhook_secret: str


async def create_key(deps: Deps, name: str) -> NewKey:
    key, webhook_secret = KEY_PREFIX + secrets.token_urlsafe(32), new_webhook_secret()
    row = ApiKey(
        name=name, key_hash=hash_key(key), prefix=key[:10], webhook_secret=webhook_secret, created_at=deps.clock()
    )
    async with deps.write() as session:
        session.add(row)
    return NewKey(row.id, key, webhook_secret)


async def rotate_webhook_secret(deps: Deps, key_id: int) -> str:
    """A new signing secret; the old one keeps signing beside it for a day (see webhooks.signing_secrets)."""
    async with deps.write() as session:
        row = await session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"No API key #{key_id}")
        row.previous_webhook_secret, row.webhook_secret = row.webhook_secret, new_webhook_secret()
        row.webhook_secret_rotated_at = deps.clock()
        return row.webhook_secret


async def authenticate(deps: Deps, key: str | None) -> int:
    """The id of the key's owner, or Unauthorized. While the database cannot be asked, a key this
    process found valid before still counts, and any other is DatabaseUnavailable: it may be valid."""
    if key:
        key_hash = hash_key(key)
        owner = deps.keys.get(key_hash)
        if owner is None:
            owner = await stale_if_error(look_up_key(deps, key_hash), lambda: deps.keys.last_known(key_hash))
        if owner is not None:
            KEY_ID.set(owner)
            return owner
    raise Unauthorized("Missing or invalid API key")


async def look_up_key(deps: Deps, key_hash: str) -> int | None:
    now = deps.clock()
    async with deps.sessions() as session:
        found = await queries.find_api_key(session, key_hash, now)
    if found is None:
        deps.keys.put(key_hash, None)
        return None
    owner, expires_at = found
    deps.keys.put(key_hash, owner, None if expires_at is None else (expires_at - now).total_seconds())
    return owner


LIMITS = ("rate_per_minute", "max_in_flight", "daily_credit_budget", "monthly_credit_budget")


async def set_limits(deps: Deps, key_id: int, **limits: float | None) -> dict[str, float | None]:
    """Change the given limits (None: unlimited); the key's limits as they now stand."""
    async with deps.write() as session:
        row = await session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"No API key #{key_id}")
        for name, value in limits.items():
            setattr(row, name, None if value is None else (int(value) if name in LIMITS[:2] else float(value)))
        return {name: getattr(row, name) for name in LIMITS}


async def record_key_use(deps: Deps) -> None:
    """Write down, in one statement, that the keys used since the last time were used now."""
    used = deps.keys.take_used()
    if not used:
        return
    try:
        async with deps.write() as session:
            stmt = update(ApiKey).where(ApiKey.id.in_(sorted(used))).values(last_used_at=deps.clock())
            await session.execute(stmt)
    except BaseException:
        deps.keys.used |= used  # written with the next round instead
        raise


async def keep_key_use(deps: Deps, stopping: asyncio.Event) -> None:
    """record_key_use every KEY_USE_WRITE_S until stopped, and once more on the way out."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), KEY_USE_WRITE_S)
        try:
            await record_key_use(deps)
        except Exception as exc:  # an outage: the keys wait for the next round
            log.warning("could not record key use: %s", type(exc).__name__)
        if stopping.is_set():
            return
