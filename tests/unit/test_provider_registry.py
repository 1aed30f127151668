"""The provider registry: providers are asked for by name, by capability and by callback route, and a
capability nobody configured is absent, with the error text callers have always given."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from PIL import Image

from app.errors import BadRequest, NotConfigured, ProviderRejected, ProviderUnavailable, Unavailable
from app.providers.base import Balance, CallbackRefused, CreateWindow, Refusal, Uploads
from app.providers.catalogue import GPT4O, Api
from app.providers.kie import signature
from app.providers.kie.callbacks import KieCallbacks
from app.providers.kie.client import KieClient
from app.providers.kvid.client import KvidClient
from app.providers.registry import Providers, build_providers
from app.settings import Settings
from app.tasks.domain import State, Update
from app.tasks.throttle import limit_for
from app.uploads import upload_image

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KIE_ROUTES = {"kie", "kie-4o", "kie-flux-kontext"}


def build(**settings: Any) -> Providers:
    return build_providers(Settings(**settings), httpx.AsyncClient())


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


class FailingUploads:
    """A provider whose file store is down or refuses, under a label of its own."""

    label = "Acme"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def create(self, spec: Any, body: dict[str, Any], callback_url: str | None) -> str:
        raise AssertionError("not used")

    async def query(self, api: Api, upstream_id: str) -> Update:
        raise AssertionError("not used")

    def rejection_status(self, code: int | None) -> int:
        return 400

    async def upload(self, content: bytes, file_name: str, mime_type: str) -> dict[str, Any]:
        raise self.error


def test_configured_providers_are_found_by_name_and_the_others_are_not_configured():
    providers = build(kieai_api_key="k")
    assert isinstance(providers.named("kie"), KieClient) and providers.get("kvid") is None
    with pytest.raises(NotConfigured, match="^kvid.ai API key not configured$"):
        providers.named("kvid")
    with pytest.raises(NotConfigured, match="^Kie.ai API key not configured$"):
        build(kvid_api_key="k").named("kie")


def test_kie_has_uploads_a_balance_and_a_create_window_and_kvid_has_none():
    kie = build(kieai_api_key="k").named("kie")
    kvid = build(kvid_api_key="k").named("kvid")
    assert all(isinstance(kie, capability) for capability in (Uploads, Balance, CreateWindow))
    assert not any(isinstance(kvid, capability) for capability in (Uploads, Balance, CreateWindow))


@pytest.mark.parametrize("capability", [Uploads, Balance])
def test_a_capability_nobody_configured_is_absent_and_names_kie(capability):
    providers = build(kvid_api_key="k")
    assert isinstance(providers.named("kvid"), KvidClient)
    assert providers.find(capability) is None
    with pytest.raises(NotConfigured, match="^Kie.ai API key not configured$"):
        providers.require(capability)


def test_a_configured_capability_is_its_provider():
    providers = build(kieai_api_key="k", kvid_api_key="k")
    assert providers.require(Uploads) is providers.find(Balance) is providers.get("kie")


def test_the_create_window_comes_from_the_settings_and_zero_turns_it_off():
    assert build(kieai_api_key="k").named("kie").create_limit() == (20, timedelta(seconds=10))
    limited = SimpleNamespace(providers=build(kieai_api_key="k", kie_create_limit=3, kie_create_window_s=1.5))
    assert limit_for(limited, "kie") == (3, timedelta(seconds=1.5))  # type: ignore[arg-type]
    assert limit_for(limited, "kvid") is None  # type: ignore[arg-type]
    unlimited = SimpleNamespace(providers=build(kieai_api_key="k", kvid_api_key="k", kie_create_limit=0))
    assert limit_for(unlimited, "kie") is None and limit_for(unlimited, "kvid") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("settings", [{}, {"kieai_api_key": "k"}])
def test_kies_callback_routes_are_owned_whether_or_not_kie_is_configured(settings):
    providers = build(**settings)
    owners = {route: providers.for_callback_route(route) for route in KIE_ROUTES}
    assert all(isinstance(owner, KieCallbacks) for owner in owners.values())
    assert providers.for_callback_route("kvid") is None and providers.for_callback_route("nope") is None


async def test_uploading_without_an_uploader_is_not_configured():
    deps = SimpleNamespace(providers=build(kvid_api_key="k"))
    with pytest.raises(NotConfigured, match="^Kie.ai API key not configured$"):
        await upload_image(deps, png())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error, raised, text",
    [
        (ProviderUnavailable("busy"), Unavailable, "Acme file upload unavailable: busy"),
        (ProviderRejected("no", code=413), BadRequest, "Acme error: no"),
    ],
)
async def test_upload_errors_name_the_uploading_provider(error, raised, text):
    deps = SimpleNamespace(providers=Providers({"acme": FailingUploads(error)}))
    with pytest.raises(raised) as caught:
        await upload_image(deps, png())  # type: ignore[arg-type]
    assert caught.value.message == text


def callback(task_id: str = "t1") -> bytes:
    return json.dumps({"code": 200, "data": {"taskId": task_id, "info": {"result_urls": ["https://x/a.png"]}}}).encode()


def signed(key: str, task_id: str, at: float) -> dict[str, str]:
    stamp = str(int(at))
    return {"x-webhook-timestamp": stamp, "x-webhook-signature": signature.sign(key, task_id, stamp)}


def test_kie_callbacks_are_read_and_their_signature_checked():
    owner = KieCallbacks("hmac", None)
    expected = Update(State.SUCCESS, image_urls=("https://x/a.png",), upstream_id="t1")
    assert owner.read("kie-4o", signed("hmac", "t1", NOW.timestamp()), callback(), NOW) == expected
    assert KieCallbacks(None, None).read("kie-4o", {}, callback(), NOW) == expected


@pytest.mark.parametrize(
    "headers, raw, refusal",
    [
        (signed("other", "t1", NOW.timestamp()), callback(), Refusal.SIGNATURE),
        (signed("hmac", "t2", NOW.timestamp()), callback(), Refusal.SIGNATURE),
        (signed("hmac", "t1", NOW.timestamp() - 301), callback(), Refusal.TIMESTAMP),
        (signed("hmac", "t1", NOW.timestamp()), b"{", Refusal.MALFORMED),
        (signed("hmac", "t1", NOW.timestamp()), b'{"taskId": "t1"}', Refusal.MALFORMED),
    ],
)
def test_kie_callbacks_that_do_not_hold_are_refused_with_the_reason(headers, raw, refusal):
    with pytest.raises(CallbackRefused) as caught:
        KieCallbacks("hmac", None).read("kie-4o", headers, raw, NOW)
    assert caught.value.refusal is refusal


async def test_a_callback_is_confirmed_by_the_configured_client_only():
    asked: list[tuple[Api, str]] = []

    class Recording:
        async def query(self, api: Api, upstream_id: str) -> Update:
            asked.append((api, upstream_id))
            return Update(State.PROCESSING)

    assert await KieCallbacks(None, None).confirm("kie-4o", "t1") is None
    assert await KieCallbacks(None, Recording()).confirm("kie-4o", "t1") == Update(State.PROCESSING)  # type: ignore[arg-type]
    assert asked == [(GPT4O, "t1")]
