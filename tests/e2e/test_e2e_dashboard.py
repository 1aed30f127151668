"""End to end: the operator's dashboard, in a real headless Chromium against a gateway and the Kie
emulator over loopback HTTP; who may open it; and that one client never sees another's prompts
outside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page

from app.dashboard import access
from tests.e2e.test_e2e_flow import submit
from tests.e2e.test_e2e_webhooks import Receiver
from tests.support.gateways import ClientOf, Emulator, Gateway, StartGateway, StartServer, wait_for_state
from tests.support.waiting import wait_until

ADMIN_KEY = "operator-admin-key-0123456789abcdef"
DATA_PATHS = ("/dashboard/api/summary", "/dashboard/api/tasks", "/dashboard/api/stream")


async def copied(client: httpx.AsyncClient, gateway: Gateway, task_id: str) -> dict[str, Any]:
    """The task's status once its image is served from the gateway's own copy."""

    async def status() -> dict[str, Any]:
        return (await client.get("/api/images/status", params={"taskId": task_id})).json()

    found = await wait_until(status, lambda s: (s.get("imageUrl") or "").startswith(gateway.url), timeout=15)
    assert (found.get("imageUrl") or "").startswith(gateway.url), found
    return found


def tampered(cookie: str) -> str:
    """The cookie with its signature's last digit changed."""
    return cookie[:-1] + ("1" if cookie.endswith("0") else "0")


async def sign_in(page: Page, gateway: Gateway) -> None:
    response = await page.goto(gateway.url + "/dashboard")
    assert response is not None and response.status == 401  # the sign-in form
    await page.fill("input[name=key]", ADMIN_KEY)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#tasks tbody tr[data-task-id]")


async def row_text(page: Page, task_id: str) -> list[str]:
    return await page.locator(f'tr[data-task-id="{task_id}"] td').all_inner_texts()


async def thumbnails_loaded(page: Page, task_ids: list[str]) -> bool:
    script = """ids => ids.every(id => {
        const img = document.querySelector(`tr[data-task-id="${id}"] img.thumb`);
        return img !== null && img.complete && img.naturalWidth > 0;
    })"""
    return bool(await page.evaluate(script, task_ids))


async def test_the_dashboard_shows_tasks_live_in_a_real_browser(
    start_gateway: StartGateway,
    client_of: ClientOf,
    kie: Emulator,
    start_server: StartServer,
    browser: Browser,
    tmp_path: Path,
) -> None:
    gateway = await start_gateway(admin_key=ADMIN_KEY, webhook_allow_private=True)
    receiver = Receiver(None)
    await start_server(receiver.server)
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as alice, client_of(gateway) as bob:
        first = await submit(alice, prompt="a lighthouse at dawn", webhookUrl=receiver.url)
        second = await submit(bob, prompt="a fox in the snow")
        for client, task_id in ((alice, first), (bob, second)):
            await wait_for_state(client, task_id, {"success"})
            await copied(client, gateway, task_id)
        await receiver.wait_for(1)

        context = await browser.new_context()
        try:  # closed before the gateway stops: an open event stream would hold its shutdown
            page = await context.new_page()
            await sign_in(page, gateway)
            problems: list[str] = []  # after signing in: the sign-in page itself is a 401
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            for task_id, prompt in ((first, "a lighthouse at dawn"), (second, "a fox in the snow")):
                cells = await row_text(page, task_id)
                assert task_id in cells and "nano-banana-pro" in cells and "success" in cells and prompt in cells
            assert await page.locator("#tasks tbody tr").first.get_attribute("data-task-id") == second  # newest first
            await wait_until(lambda: thumbnails_loaded(page, [first, second]), bool, timeout=10)
            assert await thumbnails_loaded(page, [first, second])
            assert await page.inner_text('#states dd[data-name="success"]') == "2"

            # While the page stays open (no reload: the marker survives), a new task appears and finishes.
            await page.evaluate("window.notReloaded = true")
            await kie.set_faults(generate_s=1.5)
            third = await submit(alice, prompt="a late arrival")
            await page.wait_for_selector(f'tr[data-task-id="{third}"]', timeout=10_000)
            await wait_for_state(alice, third, {"success"})
            await copied(alice, gateway, third)
            await page.wait_for_function(
                f"""() => document.querySelector('tr[data-task-id="{third}"] td.state')?.textContent === 'success'""",
                timeout=10_000,
            )
            await wait_until(lambda: thumbnails_loaded(page, [third]), bool, timeout=10)
            success_count = """() => document.querySelector('#states dd[data-name="success"]').textContent === '3'"""
            await page.wait_for_function(success_count, timeout=10_000)
            assert await page.evaluate("window.notReloaded") is True
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            # The detail view: history, the callback inbox with its verdict, the webhook and its attempt.
            await page.click(f'a[href="#task/{first}"]')
            await page.wait_for_selector("#detail-webhooks tbody tr td")
            history = await page.inner_text("#detail-events")
            assert "created" in history and "applied" in history and "success" in history
            assert "applied" in await page.inner_text("#detail-callbacks")
            webhooks = await page.inner_text("#detail-webhooks")
            assert receiver.url in webhooks and "delivered" in webhooks and "HTTP 200" in webhooks
            assert await page.evaluate("document.querySelector('#detail-image').naturalWidth") > 0
            await page.screenshot(path=str(tmp_path / "task.png"), full_page=True)
            assert problems == []
        finally:
            await context.close()


async def test_only_the_admin_key_opens_the_dashboard(start_gateway: StartGateway, client_of: ClientOf) -> None:
    gateway = await start_gateway(admin_key=ADMIN_KEY)
    async with client_of(gateway) as client, httpx.AsyncClient(base_url=gateway.url) as anyone:
        task_id = await submit(client)
        key = client.headers["authorization"].removeprefix("Bearer ")
        paths = [*DATA_PATHS, f"/dashboard/api/tasks/{task_id}", f"/dashboard/files/{task_id}/0"]
        for path in paths:
            assert (await anyone.get(path)).status_code == 401, path
            refused = await client.get(path)
            assert refused.status_code == 403 and refused.json() == {"error": access.NOT_ADMIN}, path
            assert (await anyone.get(path, headers={"Cookie": f"auth_token={key}"})).status_code == 403, path
            wrong = await anyone.get(path, headers={"Authorization": "Bearer not-a-key"})
            assert wrong.status_code == 401, path
        page = await client.get("/dashboard")
        assert page.status_code == 403 and 'name="key"' in page.text and task_id not in page.text

        settings = gateway.settings
        for cookie in (
            access.session_cookie(settings, now=time.time() - access.SESSION_S - 1),  # expired
            tampered(access.session_cookie(settings)),
            f"{int(time.time()) + 3600}.{'0' * 64}",  # forged
        ):
            assert (await anyone.get(DATA_PATHS[0], headers={"Cookie": f"{access.COOKIE}={cookie}"})).status_code == 401
        refused = await anyone.post("/dashboard/sign-in", data={"key": key})
        assert refused.status_code == 401 and access.COOKIE not in refused.cookies

        signed_in = await anyone.post("/dashboard/sign-in", data={"key": ADMIN_KEY})
        assert signed_in.status_code == 303
        assert "httponly" in signed_in.headers["set-cookie"].lower()
        assert "samesite=strict" in signed_in.headers["set-cookie"].lower()
        assert ADMIN_KEY not in signed_in.headers["set-cookie"]
        listed = await anyone.get("/dashboard/api/tasks")
        assert listed.status_code == 200 and listed.json()["tasks"][0]["taskId"] == task_id
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as script:
        summary = (await script.get("/dashboard/api/summary")).json()
        assert summary["states"]["pending"] + summary["states"]["processing"] + summary["states"]["success"] == 1


async def test_the_dashboard_is_off_without_an_admin_key(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anyone:
        for path in ("/dashboard", *DATA_PATHS):
            response = await anyone.get(path, headers={"Authorization": "Bearer anything-at-all"})
            assert response.status_code == 404 and response.json() == {"error": access.OFF}, path


async def test_no_client_sees_another_clients_prompts(
    start_gateway: StartGateway, client_of: ClientOf, kie: Emulator
) -> None:
    gateway = await start_gateway(admin_key=ADMIN_KEY)
    secret_prompt = "alice's unreleased product shot 7f3c9a"
    await kie.set_faults(generate_s=0.2)
    async with client_of(gateway) as alice, client_of(gateway) as bob:
        task_id = await submit(alice, prompt=secret_prompt)
        await wait_for_state(alice, task_id, {"success"})
        await submit(bob, prompt="bob's own")
        seen_by_bob = [
            await bob.get("/api/images/tasks"),
            await bob.get("/api/images/events"),
            await bob.get("/api/images/status", params={"taskId": task_id}),
            await bob.get(f"/api/images/tasks/{task_id}/events"),
            await bob.get(f"/api/images/{task_id}/files/0"),
            await bob.get("/api/webhooks/deliveries", params={"taskId": task_id}),
            await bob.get("/api/usage"),
            *[await bob.get(path) for path in (*DATA_PATHS[:2], f"/dashboard/api/tasks/{task_id}")],
        ]
        for response in seen_by_bob:
            assert secret_prompt not in response.text and task_id not in response.text, response.request.url
        assert [r.status_code for r in seen_by_bob[2:5]] == [404, 404, 404]
        async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            detail = (await admin.get(f"/dashboard/api/tasks/{task_id}")).json()
        assert detail["task"]["prompt"] == secret_prompt  # the operator's view is the one place it shows
