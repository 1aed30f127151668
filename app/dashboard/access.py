"""Who may see the dashboard: the operator, holding IMAGEHOOK_ADMIN_KEY.

A script sends it as `Authorization: Bearer`; a browser signs in once with it and then carries a
session cookie: an expiry and an HMAC over it (keyed by IMAGEHOOK_SECRET, bound to the admin
key, so changing the key ends every session), never the key itself. The cookie is HttpOnly,
SameSite=Strict and scoped to /dashboard, so no other site can make a browser use it.
Client keys never open the dashboard, however valid: they get 403.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.requests import Request

from app import signing
from app.api.auth import bearer_key
from app.errors import Forbidden, NotFound, Unauthorized
from app.keys import authenticate
from app.settings import Settings

COOKIE = "imagehook_admin"
SESSION_S = 12 * 3600
SESSION_PURPOSE = "dashboard"
OFF = "The dashboard is off: set IMAGEHOOK_ADMIN_KEY to turn it on"
SIGN_IN = "Sign in to the dashboard with the admin key (IMAGEHOOK_ADMIN_KEY)"
NOT_ADMIN = "This needs the admin key (IMAGEHOOK_ADMIN_KEY); client keys cannot open the dashboard"


def admin_key(settings: Settings) -> str:
    if settings.admin_key is None:
        raise NotFound(OFF)
    return settings.admin_key


def is_admin_key(settings: Settings, key: str) -> bool:
    expected = hashlib.sha256(admin_key(settings).encode()).digest()
    return hmac.compare_digest(hashlib.sha256(key.encode("utf-8", "replace")).digest(), expected)


def session_cookie(settings: Settings, now: float | None = None) -> str:
    """A session that lasts SESSION_S from now."""
    return _signed(settings, int((time.time() if now is None else now) + SESSION_S))


def _signed(settings: Settings, expires: int) -> str:
    return signing.expiring_token(settings.secret, SESSION_PURPOSE, expires, _admin_key_digest(settings))


def _admin_key_digest(settings: Settings) -> str:
    return hashlib.sha256(admin_key(settings).encode()).hexdigest()


def valid_session(settings: Settings, cookie: str, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    verdict = signing.check_token(settings.secret, SESSION_PURPOSE, cookie, now, _admin_key_digest(settings))
    return verdict is signing.TokenCheck.VALID


async def require_admin(request: Request) -> None:
    """Returns for the operator; NotFound while the dashboard is off, Forbidden for a client's key,
    Unauthorized for anyone else."""
    settings: Settings = request.state.deps.settings
    admin_key(settings)
    key = bearer_key(request)
    if key is not None:
        if is_admin_key(settings, key):
            return
        await authenticate(request.state.deps, key)  # Unauthorized unless it is a client's key
        raise Forbidden(NOT_ADMIN)
    cookie = request.cookies.get(COOKIE)
    if cookie and valid_session(settings, cookie):
        return
    if request.cookies.get("auth_token"):
        raise Forbidden(NOT_ADMIN)  # a client signed in to the seed's cookie, not the operator
    raise Unauthorized(SIGN_IN)
