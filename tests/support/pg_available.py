"""Exit 0 when the PostgreSQL server in argv[1] (a SQLAlchemy URL) accepts connections."""

import asyncio
import sys

import asyncpg
from sqlalchemy.engine import make_url


async def main(url: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    await connection.close()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1]))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"PostgreSQL unavailable: {exc}", file=sys.stderr)
        sys.exit(1)
