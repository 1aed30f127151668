"""Who is calling: an API key as `Authorization: Bearer`, or the seed's `auth_token` cookie.

A browser attaches cookies to requests that other sites make it send, so a request that
changes state on the strength of the cookie alone must show it was meant: JSON (which no
cross-site form can send) and, when the browser names one, our own origin. Bearer keys are
never attached by a browser on its own, so they need neither.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from app.errors import Forbidden
from app.keys import authenticate

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_REFUSAL = (
    "Requests authenticated by the auth_token cookie that change state must be JSON "
    "(Content-Type: application/json) sent from this site; or use Authorization: Bearer"
)


def bearer_key(request: Request) -> str | None:
    return bearer_credentials(request.headers.get("authorization", ""))


def bearer_credentials(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header's value."""
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def presented_key(request: Request) -> str | None:
    """`Authorization: Bearer <key>`, or the seed's `auth_token` cookie."""
    return bearer_key(request) or request.cookies.get("auth_token")


async def owner_of(request: Request) -> int:
    """The caller's key id; Unauthorized without a valid key, Forbidden for a cross-site cookie request."""
    key = bearer_key(request)
    if key is None:
        key = request.cookies.get("auth_token")
        if key and request.method not in SAFE_METHODS:
            check_cookie_request(request)
    return await authenticate(request.state.deps, key)


def check_cookie_request(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" or not same_origin(request):
        raise Forbidden(CSRF_REFUSAL)


def same_origin(request: Request) -> bool:
    """Sent from an origin this service answers for; without Origin (not a browser, or an old one),
    a browser saying the request is cross-site (Sec-Fetch-Site) is believed."""
    origin = request.headers.get("origin")
    if origin is not None:
        return _normalised(origin) in _own_origins(request)
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _own_origins(request: Request) -> set[str]:
    settings = request.state.deps.settings
    host = request.headers.get("host", "")
    return {f"{request.url.scheme}://{host}".lower(), _normalised(settings.public_base_url), *settings.allowed_origins}


def _normalised(origin: str) -> str:
    parts = urlsplit(origin.strip().lower())
    return f"{parts.scheme}://{parts.netloc}"
