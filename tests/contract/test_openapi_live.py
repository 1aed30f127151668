"""The gateway keeps to its published contract: schemathesis, the property-based OpenAPI tester, drives
every operation of /openapi.json against a live gateway and the emulator, with valid and invalid input."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.contract.document import build
from tests.support.gateways import Emulator, StartGateway

# More for a longer hunt: CONTRACT_EXAMPLES=200 make test-sqlite
EXAMPLES = os.environ.get("CONTRACT_EXAMPLES", "15")
MAX_TIME_S = int(os.environ.get("CONTRACT_MAX_TIME_S", "90"))
# What the contract promises: no server error, every status code and content type documented, every
# body as its schema says, and input the schema rules out refused.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,negative_data_rejection"
)
ADMIN_KEY = "contract-admin-key-0123456789abcdef"


async def test_the_document_is_served_to_anyone(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anyone:
        response = await anyone.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == build()


@pytest.mark.timeout(MAX_TIME_S + 60)
async def test_schemathesis_finds_no_departure_from_the_contract(
    start_gateway: StartGateway, kie: Emulator, make_key, tmp_path: Path
) -> None:
    await kie.set_faults(generate_s=0.05)
    # No create throttle: thousands of generated tasks must not queue behind it and hold `Prefer: wait`.
    gateway = await start_gateway(kie_create_limit=0, admin_key=ADMIN_KEY)
    key = await make_key("schemathesis")
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{gateway.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        EXAMPLES,
        "--max-time",
        str(MAX_TIME_S),
        "--request-timeout",
        "70",  # longer than the longest wait a request may ask for (60 s)
        # One worker: hypothesis reads lambdas' source with `ast`, which CPython 3.11 does not do safely in parallel.
        "--workers",
        "1",
    ]
    run = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, timeout=MAX_TIME_S + 45
    )
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    # Every operation but /openapi.json itself, which schemathesis leaves out, was selected and tested.
    operations = sum(len(methods) for methods in build()["paths"].values()) - 1
    assert f"Selected: {operations}/{operations}" in run.stdout and f"Tested: {operations}\n" in run.stdout, run.stdout
