"""The Alembic migrations, installed with the package as app._migrations (see app/db/migrate.py)."""
