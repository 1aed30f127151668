"""End to end: what an operator sees. /metrics read with prometheus-client's own parser (names,
labels, the counts a run of real tasks leaves), METRICS_TOKEN, request ids, and a gateway run as
its own process with LOG_FORMAT=json whose every log line is JSON, carries its request id and
never a secret: not the API key, a callback token, the webhook secret or the Kie.ai key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_e2e_flow import submit
from tests.support.gateways import EMULATOR_API_KEY, ClientOf, Emulator, StartGateway, gateway_env, wait_for_state
from tests.support.servers import ProcessServer, free_port


async def scrape(http: httpx.AsyncClient, url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await http.get(url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_what_real_tasks_did(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator
) -> None:
    gateway = await start_gateway()
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as client, httpx.AsyncClient() as anyone:
        before = await scrape(anyone, gateway.url)
        task_ids = [await submit(client), await submit(client)]
        for task_id in task_ids:
            await wait_for_state(client, task_id, {"success"})
            # Three reads: even if its copy's commit drops the cached status in between, one is a hit.
            for _ in range(3):
                await client.get("/api/images/status", params={"taskId": task_id})
        refused = await client.post("/api/images/generate", json={"prompt": "x", "model": "no-such-model"})
        assert refused.status_code == 400
        after = await scrape(anyone, gateway.url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    model = "nano-banana-pro"
    assert grew("imagehook_tasks_submitted_total", model=model, outcome="accepted") == 2
    assert grew("imagehook_tasks_submitted_total", model="unknown", outcome="rejected_input") == 1
    assert grew("imagehook_tasks_finished_total", model=model, state="success") == 2
    assert grew("imagehook_upstream_calls_total", provider="kie", operation="create", outcome="ok") == 2
    assert grew("imagehook_callbacks_total", api="kie", verdict="applied") == 2
    assert grew("imagehook_task_duration_seconds_count", model=model) == 2
    assert grew("imagehook_callback_delay_seconds_count", model=model) == 2
    assert grew("imagehook_status_reads_total", outcome="cache_hit") >= 2
    for queue in ("webhooks_due", "copies_due", "create_slot"):
        assert ("imagehook_backlog", (("queue", queue),)) in after
    routes = {dict(labels).get("route") for name, labels in after if name.startswith("imagehook_http_request")}
    assert "/callbacks/{api}/{task_id}/{token}" in routes and "/api/images/status" in routes
    # Labels are templates and bounded values, never ids or tokens.
    for _, labels in after:
        for _, label in labels:
            assert "ih_" not in label and task_ids[0] not in label


async def test_metrics_token_guards_the_endpoint_when_set(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(metrics_token="scrape-token-0123456789")
    async with httpx.AsyncClient() as http:
        assert (await http.get(gateway.url + "/metrics")).status_code == 401
        wrong = await http.get(gateway.url + "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await http.get(gateway.url + "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
    assert right.status_code == 200 and "imagehook_tasks_submitted_total" in right.text


async def test_every_response_names_its_request(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        kept = await http.get("/healthz", headers={"X-Request-ID": "lb-4f2a.17"})
        made = await http.get("/healthz")
        replaced = await http.get("/healthz", headers={"X-Request-ID": "x" * 200})
        unknown = await http.get("/no/such/route")
    assert kept.headers["x-request-id"] == "lb-4f2a.17"
    assert len(made.headers["x-request-id"]) == 16
    assert replaced.headers["x-request-id"] != "x" * 200 and len(replaced.headers["x-request-id"]) == 16
    assert unknown.status_code == 404 and unknown.headers["x-request-id"]


async def test_json_logs_carry_request_ids_and_never_a_secret(
    database_url: str, emulator, kie: Emulator, make_client_key, tmp_path: Path
) -> None:
    port, log_file = free_port(), tmp_path / "gateway.log"
    env = gateway_env(database_url, emulator.url, port, LOG_FORMAT="json", ACCESS_LOG="1", WEBHOOK_ALLOW_PRIVATE="1")
    server = ProcessServer(env, port, log_file=log_file)
    key = await make_client_key("logged")
    base = server.url
    try:
        await asyncio.to_thread(server.start)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key.key}"}) as client:
            await kie.set_faults(generate_s=0.2)
            task_id = await submit(client, webhookUrl=f"{base}/healthz")
            await wait_for_state(client, task_id, {"success"})
            await client.get("/api/images/status", params={"taskId": task_id}, headers={"X-Request-ID": "trace-1"})
            await client.get("/api/images/status", params={"taskId": "ih_unknown"})
            forged = await client.post(f"/callbacks/kie/{task_id}/forged-token-0123456789", json={})
            assert forged.status_code == 401
            await asyncio.sleep(1)  # the webhook attempt and its log line
    finally:
        await asyncio.to_thread(server.stop)
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    (job,) = [job for job in await kie.tasks() if job.get("callBackUrl", "").startswith(base)]
    token = job["callBackUrl"].rsplit("/", 1)[1]
    for secret in (
        key.key,
        token,
        key.webhook_secret,
        EMULATOR_API_KEY,
        gateway_env(database_url, "", 0)["IMAGEHOOK_SECRET"],
    ):
        assert secret not in text
    access = [line for line in lines if line["logger"] == "imagehook.access"]
    assert {"time", "level", "message", "request_id"} <= set(access[0])
    traced = [line for line in access if line.get("request_id") == "trace-1"]
    assert traced and traced[0]["route"] == "/api/images/status" and traced[0]["key_id"] == key.id
    callbacks = [line for line in access if line["route"] == "/callbacks/{api}/{task_id}/{token}"]
    assert sorted({line["status"] for line in callbacks}) == [200, 401]  # Kie's, and the forged one
    # The refused callback's warning names its task; the line is JSON like every other.
    refusals = [line for line in lines if "refused" in line["message"] and line["logger"] != "imagehook.access"]
    assert refusals and refusals[0]["task_id"] == task_id and refusals[0]["level"] == "WARNING"
