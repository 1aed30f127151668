"""Configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/imagehook.db"
DEV_SECRET_FILE = Path("var/imagehook.secret")
# Where Kie and kvid.ai serve result files; "*." matches any subdomain.
DEFAULT_FETCH_ALLOWED_HOSTS = (
    "tempfile.aiquickdraw.com",
    "*.aiquickdraw.com",
    "*.kie.ai",
    "*.redpandaai.co",
    "*.kvid.ai",
)


class SettingsError(ValueError):
    """A configuration variable is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    public_base_url: str = "http://127.0.0.1:8000"
    kieai_api_key: str | None = field(default=None, repr=False)
    kieai_base_url: str = "https://api.kie.ai"
    kieai_webhook_hmac_key: str | None = field(default=None, repr=False)
    kieai_upload_base_url: str = "https://kieai.redpandaai.co"
    kvid_api_key: str | None = field(default=None, repr=False)
    kvid_base_url: str = "https://api.kvid.ai"
    secret: str = field(default="", repr=False)
    sweep_interval_s: float = 5.0
    stale_after_s: float = 90.0
    task_timeout_s: float = 900.0
    poll_interval_s: float = 3.0
    callback_confirm: bool = False
    upstream_timeout_s: float = 30.0
    credit_estimate_per_image: float = 20.0
    kie_create_limit: int = 20
    kie_create_window_s: float = 10.0
    webhook_allow_private: bool = False
    webhook_retry_for_s: float = 86400.0
    webhook_retry_base_s: float = 5.0
    webhook_timeout_s: float = 15.0
    max_body_bytes: int = 1024 * 1024
    storage_dir: str = "var/files"
    storage_max_bytes: int = 50 * 1024 * 1024
    # Result images are fetched only from these hosts: the copier never becomes an open proxy.
    fetch_allowed_hosts: tuple[str, ...] = DEFAULT_FETCH_ALLOWED_HOSTS
    copy_timeout_s: float = 60.0
    # Serialized status bodies kept in each process (about 1 KB each); 0 turns the cache off.
    status_cache_size: int = 20000
    # Bounds on waiting for the database: connecting, one statement, a free pooled connection.
    database_timeout_s: float = 5.0
    # A client has this long to send its request headers, and then its body; slower ones are cut off.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    # Open connections per process, long-polls and event streams included.
    max_connections: int = 4096
    # Browser origins (scheme://host[:port]) besides the gateway's own that may use cookie auth.
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        api_key = env.get("KIEAI_API_KEY") or None
        base_url = env.get("KIEAI_BASE_URL", cls.kieai_base_url).rstrip("/")
        return cls(
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            public_base_url=env.get("PUBLIC_BASE_URL", cls.public_base_url).rstrip("/"),
            kieai_api_key=api_key,
            kieai_base_url=base_url,
            kieai_webhook_hmac_key=env.get("KIEAI_WEBHOOK_HMAC_KEY") or None,
            kieai_upload_base_url=env.get("KIEAI_UPLOAD_BASE_URL", cls.kieai_upload_base_url).rstrip("/"),
            kvid_api_key=env.get("KVID_API_KEY") or None,
            kvid_base_url=env.get("KVID_BASE_URL", cls.kvid_base_url).rstrip("/"),
            secret=_secret(env, production=api_key is not None and base_url == cls.kieai_base_url),
            sweep_interval_s=_number(env, "SWEEP_INTERVAL_S", cls.sweep_interval_s),
            stale_after_s=_number(env, "STALE_AFTER_S", cls.stale_after_s),
            task_timeout_s=_number(env, "TASK_TIMEOUT_S", cls.task_timeout_s),
            poll_interval_s=_number(env, "POLL_INTERVAL_S", cls.poll_interval_s),
            callback_confirm=env.get("CALLBACK_CONFIRM", "0") == "1",
            upstream_timeout_s=_number(env, "UPSTREAM_TIMEOUT_S", cls.upstream_timeout_s),
            credit_estimate_per_image=_number(env, "CREDIT_ESTIMATE_PER_IMAGE", cls.credit_estimate_per_image),
            kie_create_limit=int(_number(env, "KIE_CREATE_LIMIT", cls.kie_create_limit)),
            kie_create_window_s=_number(env, "KIE_CREATE_WINDOW_S", cls.kie_create_window_s),
            webhook_allow_private=env.get("WEBHOOK_ALLOW_PRIVATE", "0") == "1",
            webhook_retry_for_s=_number(env, "WEBHOOK_RETRY_FOR_S", cls.webhook_retry_for_s),
            webhook_retry_base_s=_number(env, "WEBHOOK_RETRY_BASE_S", cls.webhook_retry_base_s),
            webhook_timeout_s=_number(env, "WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s),
            storage_dir=env.get("STORAGE_DIR") or cls.storage_dir,
            storage_max_bytes=_integer(env, "STORAGE_MAX_BYTES", cls.storage_max_bytes),
            fetch_allowed_hosts=_hosts(env, "FETCH_ALLOWED_HOSTS", cls.fetch_allowed_hosts),
            copy_timeout_s=_number(env, "COPY_TIMEOUT_S", cls.copy_timeout_s),
            status_cache_size=_integer(env, "STATUS_CACHE_SIZE", cls.status_cache_size),
            database_timeout_s=_positive(env, "DATABASE_TIMEOUT_S", cls.database_timeout_s),
            header_timeout_s=_positive(env, "HEADER_TIMEOUT_S", cls.header_timeout_s),
            body_timeout_s=_positive(env, "BODY_TIMEOUT_S", cls.body_timeout_s),
            max_connections=int(_positive(env, "MAX_CONNECTIONS", cls.max_connections, whole=True)),
            allowed_origins=_origins(env, "ALLOWED_ORIGINS"),
        )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


def _positive(env: Mapping[str, str], name: str, default: float, *, whole: bool = False) -> float:
    """A bound that 0 would turn into an outage: it must be above zero."""
    value = _integer(env, name, int(default)) if whole else _number(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name} must be greater than 0, got {env[name]!r}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default)
    if not float(value).is_integer():
        raise SettingsError(f"{name} must be a whole number, got {env[name]!r}")
    return int(value)


def _hosts(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(host.strip().lower() for host in raw.split(",") if host.strip())


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    return tuple(origin.strip().rstrip("/").lower() for origin in raw.split(",") if origin.strip())


def _secret(env: Mapping[str, str], *, production: bool) -> str:
    """IMAGEHOOK_SECRET derives callback secrets, so it must outlive restarts.

    Against the real Kie.ai it is required. In development (no key, or a non-default
    KIEAI_BASE_URL such as the emulator) one is generated once and kept in var/.
    """
    value = env.get("IMAGEHOOK_SECRET")
    if value:
        if len(value) < 16:
            raise SettingsError("IMAGEHOOK_SECRET must be at least 16 characters")
        return value
    if production:
        raise SettingsError("IMAGEHOOK_SECRET is required when KIEAI_API_KEY is set")
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text().strip()
    DEV_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    DEV_SECRET_FILE.write_text(value)
    DEV_SECRET_FILE.chmod(0o600)
    return value
