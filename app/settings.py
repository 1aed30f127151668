"""Configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.observe.logs import chosen

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/imagehook.db"
KIE_BASE_URL = "https://api.kie.ai"
DEV_SECRET_FILE = Path("var/imagehook.secret")
# The spellings of a yes/no variable, in any case.
FLAG_WORDS = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
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
    kieai_base_url: str = KIE_BASE_URL
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
    # file:///path or s3://bucket/prefix; unset: the directory STORAGE_DIR names (app/outbox/storage.py).
    storage_url: str = ""
    # Serve a copy kept in a bucket as a 302 to a short-lived presigned URL instead of through the gateway.
    storage_redirect: bool = False
    storage_max_bytes: int = 50 * 1024 * 1024
    # Result images are fetched only from these hosts: the copier never becomes an open proxy.
    fetch_allowed_hosts: tuple[str, ...] = DEFAULT_FETCH_ALLOWED_HOSTS
    copy_timeout_s: float = 60.0
    # How long an OpenAI-compatible images request waits for its task before answering 504 (the task goes on).
    openai_wait_s: float = 300.0
    # Serialized status bodies kept in each process (about 1 KB each); 0 turns the cache off.
    status_cache_size: int = 20000
    # Bounds on waiting for the database: connecting, one statement, a free pooled connection.
    database_timeout_s: float = 5.0
    # A client has this long to send its request headers, and then its body; slower ones are cut off.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    # Open connections per process, long-polls and event streams included.
    max_connections: int = 4096
    # On SIGTERM: how long it goes on serving while /readyz says "draining", for load balancers to notice;
    shutdown_delay_s: float = 2.0
    # then how long requests in flight and background rounds get to finish before the process exits.
    shutdown_grace_s: float = 15.0
    # Browser origins (scheme://host[:port]) besides the gateway's own that may use cookie auth.
    allowed_origins: tuple[str, ...] = ()
    # Logs (app/observe/logs.py reads these two itself, before anything else, to log from the start).
    log_format: str = "text"
    log_level: str = "INFO"
    # One log line per request (app/observe/requests.py). Off by default: a line per cached read is a
    # large share of that read's cost, and the duration histogram counts every request anyway.
    access_log: bool = False
    # GET /metrics wants `Authorization: Bearer <this>` when set; open otherwise.
    metrics_token: str | None = field(default=None, repr=False)
    # The operator's credential for /dashboard (app/dashboard/); no dashboard while unset.
    admin_key: str | None = field(default=None, repr=False)
    # Signed file URLs in status objects work at least this long after the read; read tokens this long.
    signed_url_ttl_s: float = 3600.0

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from env (the process environment by default); SettingsError names a bad variable."""
        env = os.environ if env is None else env
        defaults = {setting.name: setting.default for setting in fields(cls)}
        return cls(**{var.setting: var.read(env, var.name, defaults[var.setting]) for var in VARIABLES})


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default)


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default).rstrip("/")


def _given(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """The value, or the default when the variable is unset or empty."""
    return env.get(name) or default


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    word = raw.strip().lower()
    if word not in FLAG_WORDS:
        raise SettingsError(f"{name} must be one of {', '.join(FLAG_WORDS)}, got {raw!r}")
    return FLAG_WORDS[word]


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


def _whole_positive(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_positive(env, name, default, whole=True))


def _truncated(env: Mapping[str, str], name: str, default: int) -> int:
    """A number whose fraction is cut off (2.5 is 2)."""
    return int(_number(env, name, default))


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


def _origins(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    return tuple(origin.strip().rstrip("/").lower() for origin in raw.split(",") if origin.strip())


def _log_choice(env: Mapping[str, str], which: int) -> str:
    try:
        return chosen(env)[which]
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


# A bucket name as S3 allows it (3-63 lowercase letters, digits, dots and hyphens).
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _storage_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme == "file" and parts.path and not parts.netloc and not parts.query:
        return raw
    if parts.scheme == "s3" and BUCKET.fullmatch(parts.netloc) and not parts.query and not parts.fragment:
        return raw.rstrip("/")
    raise SettingsError(f"{name} must be file:///path or s3://bucket/prefix, got {raw!r}")


def _secret(env: Mapping[str, str], name: str, default: str) -> str:
    """IMAGEHOOK_SECRET derives callback secrets, so it must outlive restarts.

    Against the real Kie.ai (a key, and the default KIEAI_BASE_URL) it is required. In
    development (no key, or another KIEAI_BASE_URL such as the emulator's) one is generated
    once and kept in var/.
    """
    value = env.get(name)
    if value:
        if len(value) < 16:
            raise SettingsError(f"{name} must be at least 16 characters")
        return value
    if _given(env, "KIEAI_API_KEY", None) and _url(env, "KIEAI_BASE_URL", KIE_BASE_URL) == KIE_BASE_URL:
        raise SettingsError(f"{name} is required when KIEAI_API_KEY is set")
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text().strip()
    DEV_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    DEV_SECRET_FILE.write_text(value)
    DEV_SECRET_FILE.chmod(0o600)
    return value


def _admin_key(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = _given(env, name, default)
    if value is not None and len(value) < 24:
        raise SettingsError(f"{name} must be at least 24 characters (e.g. from: openssl rand -hex 24)")
    return value


Reader = Callable[[Mapping[str, str], str, Any], Any]


@dataclass(frozen=True)
class Variable:
    """One environment variable: the Settings field it sets, how its text is read, what it means."""

    name: str
    setting: str
    read: Reader
    meaning: str
    shown_default: str | None = None  # for help: when the field's own default says too little

    def default_text(self) -> str:
        default = next(setting.default for setting in fields(Settings) if setting.name == self.setting)
        if self.shown_default is not None:
            return self.shown_default
        if default is None or default == ():
            return "unset"
        if isinstance(default, bool):
            return str(int(default))
        if isinstance(default, tuple):
            return ",".join(default)
        return f"{default:g}" if isinstance(default, float) else str(default)


# Every variable Settings.from_environ reads, in the order it reads them; `imagehook serve --help` lists them.
VARIABLES = (
    Variable("DATABASE_URL", "database_url", _text, "SQLite (WAL) or postgresql+asyncpg://user@host/db"),
    Variable("PUBLIC_BASE_URL", "public_base_url", _url, "base of the callback URLs given to Kie.ai"),
    Variable("KIEAI_API_KEY", "kieai_api_key", _given, "Kie.ai API key"),
    Variable("KIEAI_BASE_URL", "kieai_base_url", _url, "Kie.ai API base (the emulator's URL in development)"),
    Variable("KIEAI_WEBHOOK_HMAC_KEY", "kieai_webhook_hmac_key", _given, "Kie.ai webhook HMAC key"),
    Variable("KIEAI_UPLOAD_BASE_URL", "kieai_upload_base_url", _url, "Kie.ai file upload API"),
    Variable("KVID_API_KEY", "kvid_api_key", _given, "kvid.ai API key"),
    Variable("KVID_BASE_URL", "kvid_base_url", _url, "kvid.ai API base"),
    Variable(
        "IMAGEHOOK_SECRET",
        "secret",
        _secret,
        "derives callback tokens, signs sessions and links (>= 16 characters); required with the real Kie.ai",
        shown_default=f"generated into {DEV_SECRET_FILE}",
    ),
    Variable("SWEEP_INTERVAL_S", "sweep_interval_s", _number, "sweeper period"),
    Variable("STALE_AFTER_S", "stale_after_s", _number, "first status query of a task with no callback"),
    Variable("TASK_TIMEOUT_S", "task_timeout_s", _number, "a task not finished by then fails"),
    Variable("POLL_INTERVAL_S", "poll_interval_s", _number, "first poll of a kvid.ai task"),
    Variable("CALLBACK_CONFIRM", "callback_confirm", _flag, "confirm each callback with a status query (yes/no)"),
    Variable("UPSTREAM_TIMEOUT_S", "upstream_timeout_s", _number, "timeout of each call to a provider"),
    Variable("CREDIT_ESTIMATE_PER_IMAGE", "credit_estimate_per_image", _number, "credits reserved per requested image"),
    Variable("KIE_CREATE_LIMIT", "kie_create_limit", _truncated, "upstream creates per window (0: no throttle)"),
    Variable("KIE_CREATE_WINDOW_S", "kie_create_window_s", _number, "the window of KIE_CREATE_LIMIT"),
    Variable("WEBHOOK_ALLOW_PRIVATE", "webhook_allow_private", _flag, "let webhooks reach private addresses (yes/no)"),
    Variable("WEBHOOK_RETRY_FOR_S", "webhook_retry_for_s", _number, "how long a failing webhook is retried"),
    Variable("WEBHOOK_RETRY_BASE_S", "webhook_retry_base_s", _number, "first webhook retry delay"),
    Variable("WEBHOOK_TIMEOUT_S", "webhook_timeout_s", _number, "timeout of one webhook attempt"),
    Variable(
        "STORAGE_URL",
        "storage_url",
        _storage_url,
        "where result copies are kept: file:///path or s3://bucket/prefix",
        shown_default="file:// of STORAGE_DIR",
    ),
    Variable("STORAGE_DIR", "storage_dir", _given, "the directory of file:// storage (STORAGE_URL's older form)"),
    Variable("STORAGE_REDIRECT", "storage_redirect", _flag, "serve s3:// copies as a 302 to a presigned URL (yes/no)"),
    Variable("STORAGE_MAX_BYTES", "storage_max_bytes", _integer, "largest result file copied"),
    Variable("FETCH_ALLOWED_HOSTS", "fetch_allowed_hosts", _hosts, "the only hosts results are fetched from"),
    Variable("COPY_TIMEOUT_S", "copy_timeout_s", _number, "deadline of one result download"),
    Variable("OPENAI_WAIT_S", "openai_wait_s", _positive, "how long a /v1/images request waits for its task"),
    Variable("STATUS_CACHE_SIZE", "status_cache_size", _integer, "status objects cached per process (0: none)"),
    Variable("DATABASE_TIMEOUT_S", "database_timeout_s", _positive, "bound on every wait for the database"),
    Variable("HEADER_TIMEOUT_S", "header_timeout_s", _positive, "time a client has to send request headers"),
    Variable("BODY_TIMEOUT_S", "body_timeout_s", _positive, "time a client then has to send the body"),
    Variable("MAX_CONNECTIONS", "max_connections", _whole_positive, "open connections per process"),
    Variable("SHUTDOWN_DELAY_S", "shutdown_delay_s", _number, "on SIGTERM, time serving while /readyz says draining"),
    Variable("SHUTDOWN_GRACE_S", "shutdown_grace_s", _positive, "then time to finish requests and rounds"),
    Variable("ALLOWED_ORIGINS", "allowed_origins", _origins, "browser origins that may use cookie auth"),
    Variable("LOG_FORMAT", "log_format", lambda env, name, default: _log_choice(env, 0), "text or json"),
    Variable("LOG_LEVEL", "log_level", lambda env, name, default: _log_choice(env, 1), "DEBUG, INFO, WARNING or ERROR"),
    Variable("ACCESS_LOG", "access_log", _flag, "one log line per request (yes/no)"),
    Variable("METRICS_TOKEN", "metrics_token", _given, "bearer token GET /metrics requires (unset: open)"),
    Variable("IMAGEHOOK_ADMIN_KEY", "admin_key", _admin_key, "the operator's key for /dashboard (unset: no dashboard)"),
    Variable("SIGNED_URL_TTL_S", "signed_url_ttl_s", _positive, "lifetime of signed file URLs and read tokens"),
)
