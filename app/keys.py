"""Client API keys: created once, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets

from app.db import queries
from app.db.models import ApiKey
from app.deps import Deps
from app.errors import Unauthorized

KEY_PREFIX = "ih_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(deps: Deps, name: str) -> tuple[int, str]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:10], created_at=deps.clock())
    async with deps.sessions.begin() as session:
        session.add(row)
    return row.id, key


async def authenticate(deps: Deps, key: str | None) -> int:
    """The id of the key's owner, or Unauthorized."""
    if key:
        async with deps.sessions() as session:
            owner = await queries.find_api_key_id(session, hash_key(key))
        if owner is not None:
            return owner
    raise Unauthorized("Missing or invalid API key")
