"""Links a browser can follow without an Authorization header (`<img src>`, `EventSource`): a signed
URL of one stored file, and a read token of one task's event stream.

Both are expiring tokens under IMAGEHOOK_SECRET (app/signing.py) naming what they open: a file token
names a task and an image index, a read token a task, and their purposes differ, so neither opens
anything else. Nothing is stored: any replica sharing the secret checks any token.

Status bodies carrying signed URLs are cached as bytes, so their expiry comes in buckets: every body
signed within one bucket carries the same expiry, which lies more than SIGNED_URL_TTL_S plus a bucket
ahead. A body is served only while its URLs have at least SIGNED_URL_TTL_S left (`servable_until`),
which leaves it at least a bucket of life in the cache.
"""

from __future__ import annotations

from app.errors import Forbidden
from app.inbound.url_values import is_task_id
from app.settings import Settings
from app.signing import TokenCheck, check_token, expiring_token

FILE_PURPOSE = "file"
READ_PURPOSE = "task-read"
BUCKETS_PER_TTL = 10  # a URL changes every tenth of its lifetime, and lives at most 1.2 lifetimes

REFUSALS = {
    TokenCheck.MALFORMED: "token is malformed",
    TokenCheck.WRONG: "token is not valid for this {what}",
    TokenCheck.EXPIRED: "token has expired; {renew}",
}
RENEW_FILE = "read the task's status again for a fresh URL"
RENEW_READ = "ask POST /api/images/tasks/{taskId}/read-token for a new one"


def bucket_s(ttl_s: float) -> int:
    return max(1, int(ttl_s // BUCKETS_PER_TTL))


def signing_expiry(now: float, ttl_s: float) -> int:
    """The expiry of URLs signed at `now`: a bucket boundary more than ttl_s + one bucket ahead."""
    bucket = bucket_s(ttl_s)
    return (int(now + ttl_s) // bucket + 2) * bucket


def servable_until(expires: int, ttl_s: float) -> float:
    """Until when a body carrying URLs that expire at `expires` may be served: each then still works ttl_s."""
    return expires - ttl_s


def file_token(secret: str, task_id: str, n: int, expires: int) -> str:
    return expiring_token(secret, FILE_PURPOSE, expires, task_id, str(n))


def check_file_token(settings: Settings, task_id: str, n: str, token: str, now: float) -> None:
    """Returns if `token` opens image `n` of `task_id` (both as the URL's path has them); Forbidden otherwise."""
    if not (is_task_id(task_id) and n.isascii() and n.isdigit()):
        verdict = TokenCheck.WRONG  # no file of ours has such a path, so no token can be for it
    else:
        verdict = check_token(settings.secret, FILE_PURPOSE, token, now, task_id, n)
    _refuse_unless_valid(verdict, "file", RENEW_FILE)


def read_token(settings: Settings, task_id: str, now: float) -> tuple[str, int]:
    """A token that opens the task's event stream until its expiry (returned with it)."""
    expires = int(now + settings.signed_url_ttl_s)
    return expiring_token(settings.secret, READ_PURPOSE, expires, task_id), expires


def check_read_token(settings: Settings, task_id: str, token: str, now: float) -> None:
    """Returns if `token` opens `task_id`'s event stream (an id already checked); Forbidden otherwise."""
    _refuse_unless_valid(check_token(settings.secret, READ_PURPOSE, token, now, task_id), "task", RENEW_READ)


def _refuse_unless_valid(verdict: TokenCheck, what: str, renew: str) -> None:
    if verdict is not TokenCheck.VALID:
        raise Forbidden(REFUSALS[verdict].format(what=what, renew=renew))
