"""The Python client is usable without the server's stack: importing it pulls in only the standard library and httpx."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_STACK = {"sqlalchemy", "starlette", "alembic", "asyncpg", "aiosqlite", "uvicorn", "PIL", "multipart"}

PROBE = """
import json, sys
before = set(sys.modules)
import app.client, app.client.generate
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_imported_by_the_client() -> set[str]:
    # A fresh interpreter: this test process has the whole server imported already.
    output = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    return set(json.loads(output))


def test_importing_the_client_imports_no_server_package() -> None:
    imported = modules_imported_by_the_client()
    top_level = {name.split(".")[0] for name in imported}
    assert top_level & SERVER_STACK == set()
    assert "httpx" in top_level  # the probe really imported the client
    assert {name for name in imported if name.startswith("app.")} == {"app.client", "app.client.generate"}
