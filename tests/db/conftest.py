"""The database tier: tests against the run's real database, emptied before each test, with no server."""

from tests.support.database import empty_tables, make_client_key, make_key

__all__ = ["empty_tables", "make_client_key", "make_key"]  # fixtures, found by pytest through this module
