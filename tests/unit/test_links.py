"""Signed file URLs and read tokens, without a server: whatever text arrives as a token is refused or
accepted, never an exception; only the genuine token for the same file or task, before its expiry, is
accepted; expiries come in buckets that leave every served URL its promised lifetime; and the status
cache never serves a body whose signed URLs run short."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.errors import Forbidden
from app.reads.status_cache import CachedStatus, StatusCache
from app.settings import Settings
from app.signing import TokenCheck, check_token, expiring_token
from app.tasks import links
from app.tasks.status import signed_links
from tests.support.gateways import SECRET

SETTINGS = Settings(secret=SECRET, public_base_url="https://imagehook.example")
NOW = 1_800_000_000.0
TASK = "ih_task0000000000000000001"
texts = st.text(max_size=120) | st.from_regex(r"[0-9]{1,13}\.[0-9a-f]{0,70}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True) | st.text(max_size=50)
indices = st.from_regex(r"[0-9]{1,4}", fullmatch=True) | st.text(max_size=6)


def file_refusal(task_id: str, n: str, token: str, now: float = NOW) -> str | None:
    """None if the token opens the file; the refusal's text otherwise."""
    try:
        links.check_file_token(SETTINGS, task_id, n, token, now)
    except Forbidden as refused:
        return refused.message
    return None


def read_refusal(task_id: str, token: str, now: float = NOW) -> str | None:
    try:
        links.check_read_token(SETTINGS, task_id, token, now)
    except Forbidden as refused:
        return refused.message
    return None


@given(token=texts, purpose=st.sampled_from([links.FILE_PURPOSE, links.READ_PURPOSE]), fields=st.lists(ids, max_size=3))
@example(token="00001800003600.abc", purpose="file", fields=[TASK, "0"])
@example(token="\udcff.\x00", purpose="file", fields=[])
@example(token="١٢٣.abc", purpose="file", fields=[])  # digits, but not ASCII ones
def test_any_text_gets_a_verdict_and_only_a_genuine_one_is_valid(token: str, purpose: str, fields: list[str]) -> None:
    verdict = check_token(SECRET, purpose, token, NOW, *fields)
    assert isinstance(verdict, TokenCheck)
    if verdict in (TokenCheck.VALID, TokenCheck.EXPIRED):
        expires = int(token.partition(".")[0])
        assert token == expiring_token(SECRET, purpose, expires, *fields)


@given(task_id=ids, n=indices, token=texts)
def test_the_file_and_read_checks_refuse_forgeries_with_a_403(task_id: str, n: str, token: str) -> None:
    assert file_refusal(task_id, n, token) is not None
    assert read_refusal(task_id, token) is not None


@given(task_id=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True), n=st.integers(0, 999))
def test_a_file_token_opens_its_own_file_and_nothing_else(task_id: str, n: int) -> None:
    token = links.file_token(SECRET, task_id, n, int(NOW) + 60)
    assert file_refusal(task_id, str(n), token) is None
    wrong = "token is not valid for this file"
    assert file_refusal(task_id, str(n + 1), token) == wrong  # another image of the task
    assert file_refusal(task_id + "x", str(n), token) == wrong  # another task
    assert file_refusal(task_id, "0" + str(n), token) == wrong  # another spelling of the path
    assert read_refusal(task_id, token) == "token is not valid for this task"  # not a read token
    assert file_refusal(task_id, str(n), token, now=NOW + 60).startswith("token has expired")  # type: ignore[union-attr]


def test_a_read_token_opens_its_task_until_it_expires() -> None:
    token, expires = links.read_token(SETTINGS, TASK, NOW)
    assert expires == NOW + SETTINGS.signed_url_ttl_s
    assert read_refusal(TASK, token) is None and read_refusal(TASK, token, now=expires - 1) is None
    assert read_refusal(TASK, token, now=expires) == (
        "token has expired; ask POST /api/images/tasks/{taskId}/read-token for a new one"
    )
    assert read_refusal("ih_another", token) == "token is not valid for this task"
    assert file_refusal(TASK, "0", token) == "token is not valid for this file"  # not a file token
    expires_text, _, signature = token.partition(".")
    assert read_refusal(TASK, f"{int(expires_text) + 3600}.{signature}") == "token is not valid for this task"
    assert read_refusal(TASK, "not a token") == "token is malformed"


@given(now=st.floats(0, 4e9), ttl_s=st.floats(1, 30 * 86400))
def test_expiries_come_in_buckets_that_leave_each_served_url_its_lifetime(now: float, ttl_s: float) -> None:
    expires, bucket = links.signing_expiry(now, ttl_s), links.bucket_s(ttl_s)
    assert expires % bucket == 0
    assert now + ttl_s + bucket < expires <= now + ttl_s + 2 * bucket + 1
    until = links.servable_until(expires, ttl_s)
    assert until - now > bucket  # a cached body lives at least a bucket
    assert expires - until == pytest.approx(ttl_s)  # and each URL it serves works ttl_s more
    assert links.signing_expiry(now + bucket / 2, ttl_s) in (expires, expires + bucket)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_cached_body_is_not_served_once_its_signed_urls_run_short() -> None:
    clock = Clock(NOW)
    cache = StatusCache(10, clock=clock)
    cache.enable(True)
    signed = CachedStatus(1, True, b"signed", servable_until=NOW + 100)
    cache.put("signed", signed, cache.epoch)
    cache.put("plain", CachedStatus(1, True, b"plain"), cache.epoch)
    assert cache.get("signed") == signed and cache.last_known("signed") == signed
    clock.now = NOW + 100
    assert cache.get("signed") is None and cache.last_known("signed") is None
    assert cache.get("plain") is not None and cache.last_known("plain") is not None  # no URL to run out


class Stored:
    """What signed_links reads of a task."""

    def __init__(self, state: str, image_urls: list[str], stored_images: list[int]) -> None:
        self.id, self.state, self.image_urls, self.stored_images = TASK, state, image_urls, stored_images


@pytest.mark.parametrize(
    ("task", "signed"),
    [
        (Stored("processing", [], []), []),
        (Stored("fail", [], []), []),
        (Stored("success", ["https://up/0.png", "https://up/1.png"], []), ["https://up/0.png", "https://up/1.png"]),
        (Stored("success", ["https://up/0.png", "https://up/1.png"], [1]), ["https://up/0.png", "own/1"]),
    ],
)
def test_signed_image_urls_sign_only_imagehooks_copies(task: Stored, signed: list[str]) -> None:
    fields, until = signed_links(task, SETTINGS, NOW)  # type: ignore[arg-type]
    own = f"{SETTINGS.public_base_url}/api/images/{TASK}/files/"
    urls = [url.replace(own, "own/").split("?token=")[0] for url in fields["signedImageUrls"]]  # type: ignore[attr-defined]
    assert urls == signed
    if "own/1" in signed:
        expires = links.signing_expiry(NOW, SETTINGS.signed_url_ttl_s)
        token = links.file_token(SECRET, TASK, 1, expires)
        assert fields["signedImageUrls"][1] == f"{own}1?token={token}"  # type: ignore[index]
        assert until == links.servable_until(expires, SETTINGS.signed_url_ttl_s)
        assert fields["signedUrlsExpireAt"] is not None
    else:
        assert (fields["signedUrlsExpireAt"], until) == (None, float("inf"))
