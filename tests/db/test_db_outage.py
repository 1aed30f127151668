"""A statement the database refused is no outage: it keeps its own error."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from app.db.tables import ApiKey
from app.deps import utc_now


async def test_a_refused_statement_keeps_its_own_error(engine, sessions, make_client_key) -> None:
    key = await make_client_key("twice")
    with pytest.raises(sa_exc.IntegrityError):
        async with sessions.begin() as session:
            row = ApiKey(id=key.id, name="again", key_hash="x", prefix="x", webhook_secret="x", created_at=utc_now())
            session.add(row)
