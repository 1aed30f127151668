"""The contract tier: a live gateway and the emulator, as in tests/e2e, checked against the OpenAPI
document it publishes. The contract does not depend on the database, so this tier runs once, on SQLite."""

from __future__ import annotations

from tests.e2e.conftest import client, client_of, emulator, gateway, kie, make_client_key, make_key, start_gateway

__all__ = ["client", "client_of", "emulator", "gateway", "kie", "make_client_key", "make_key", "start_gateway"]
