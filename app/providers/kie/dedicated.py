"""Kie.ai's dedicated 4o Image and Flux Kontext APIs: reading records and callbacks.

Both report progress with `successFlag`; record-info nests results under `data.response`,
callbacks under `data.info` (reading one as the other is a classic bug: success is never seen).
"""

from __future__ import annotations

from typing import Any

from app.providers.kie.market import callback_task_id
from app.tasks.domain import State, Update

_4O_FLAGS = {0: State.PROCESSING, 1: State.SUCCESS, 2: State.FAIL}
_FLUX_FLAGS = {0: State.PROCESSING, 1: State.SUCCESS, 2: State.FAIL, 3: State.FAIL}


def read_4o_record(data: dict[str, Any]) -> Update:
    return _read_record(data, _4O_FLAGS, _4o_urls(data.get("response")))


def read_flux_record(data: dict[str, Any]) -> Update:
    return _read_record(data, _FLUX_FLAGS, _flux_urls(data.get("response")))


def read_4o_callback(body: Any) -> tuple[str, Update]:
    return _read_callback(body, _4o_urls)


def read_flux_callback(body: Any) -> tuple[str, Update]:
    return _read_callback(body, _flux_urls)


def _read_record(data: dict[str, Any], flags: dict[int, State], urls: tuple[str, ...]) -> Update:
    try:
        state = flags[int(data.get("successFlag"))]  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"unknown successFlag {data.get('successFlag')!r}") from None
    if state is State.SUCCESS:
        return Update(state, image_urls=urls)
    if state is State.FAIL:
        code = data.get("errorCode")
        return Update(
            state, fail_code=str(code) if code else None, fail_msg=str(data.get("errorMessage") or "Generation failed")
        )
    return Update(state)


def _read_callback(body: Any, read_urls: Any) -> tuple[str, Update]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise ValueError("callback body has no data object")
    upstream_id = callback_task_id(body)
    code = body.get("code")
    if code == 200:
        return upstream_id, Update(
            State.SUCCESS, image_urls=read_urls(body["data"].get("info")), upstream_id=upstream_id
        )
    message = str(body.get("msg") or body.get("message") or "Generation failed")
    fail_code = str(code) if code is not None else None
    return upstream_id, Update(State.FAIL, fail_code=fail_code, fail_msg=message, upstream_id=upstream_id)


def _4o_urls(container: Any) -> tuple[str, ...]:
    """4o results: `result_urls` in callbacks and quickstart examples, `resultUrls` in the OpenAPI spec."""
    if not isinstance(container, dict):
        return ()
    urls = container.get("result_urls") or container.get("resultUrls") or []
    return tuple(url for url in urls if isinstance(url, str) and url) if isinstance(urls, list) else ()


def _flux_urls(container: Any) -> tuple[str, ...]:
    url = container.get("resultImageUrl") if isinstance(container, dict) else None
    return (url,) if isinstance(url, str) and url else ()
