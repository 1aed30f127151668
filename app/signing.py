"""HMAC-SHA256 under IMAGEHOOK_SECRET: how imagehook signs what it hands out (callback tokens, the
dashboard's session cookie, signed file URLs, read tokens), so that nothing it signs needs storing.

A message is a purpose and its fields joined by ":" (fields are ids, numbers and digests, which never
hold a ":" themselves); the purpose keeps a value signed for one use from passing for another. An
expiring token is `<expiry>.<hex HMAC of "purpose:expiry:fields...">`, the expiry in Unix seconds.
"""

from __future__ import annotations

import enum
import hashlib
import hmac

MAX_EXPIRY_DIGITS = 12  # beyond the year 33000: anything longer is no expiry of ours


class TokenCheck(enum.Enum):
    VALID = "valid"
    MALFORMED = "malformed"  # not `<digits>.<signature>` at all
    WRONG = "wrong"  # signed for something else, or altered
    EXPIRED = "expired"  # genuine, but its time has passed


def digest(secret: str, purpose: str, *fields: str) -> str:
    return hmac.new(secret.encode(), ":".join((purpose, *fields)).encode(), hashlib.sha256).hexdigest()


def matches(expected: str, given: str) -> bool:
    """A constant-time comparison; `given` may be any text a client sent."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def expiring_token(secret: str, purpose: str, expires: int, *fields: str) -> str:
    return f"{expires}.{digest(secret, purpose, str(expires), *fields)}"


def check_token(secret: str, purpose: str, token: str, now: float, *fields: str) -> TokenCheck:
    """What `token` is for `purpose` and `fields` at `now`; any text at all gets an answer."""
    expires, dot, _ = token.partition(".")
    if not dot or not (expires.isascii() and expires.isdigit() and len(expires) <= MAX_EXPIRY_DIGITS):
        return TokenCheck.MALFORMED
    if not matches(expiring_token(secret, purpose, int(expires), *fields), token):
        return TokenCheck.WRONG
    # Only a genuine token is told it expired: an altered expiry is simply wrong.
    return TokenCheck.VALID if now < int(expires) else TokenCheck.EXPIRED
