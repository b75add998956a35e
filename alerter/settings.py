"""The alerter's settings: read once at start, like common/config.py (environment, then `.env`, then
defaults), validated; a bad value raises `ConfigError` naming the variable (exit code 2).

The shared values (DATABASE_URL, REDIS_URL, LIQ_REDIS_PREFIX, LIQ_LOG_LEVEL, the deadlines) come from
`common.config.load_settings`; the alerter's own variables are read here with the same rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from common.config import ConfigError, Secret, Settings, load_settings

WEBHOOK_FORMATS = ("json", "slack", "discord")


@dataclass(frozen=True)
class AlerterSettings:
    common: Settings
    alerts_file: Path  # LIQ_ALERTS_FILE: the TOML rules (alerter/rules.py)
    telegram_token: Secret
    telegram_chat_id: str
    telegram_api_url: str  # base URL of the Bot API (tests point it at a fake)
    webhook_url: Secret  # Slack and Discord webhook URLs carry their token: never logged
    webhook_secret: Secret  # HMAC-SHA256 key of X-Liq-Signature
    webhook_format: str  # json | slack | discord
    app_public_url: str  # links in messages: LIQ_APP_PUBLIC_URL + /explorer?... or /cascades?...
    max_attempts: int  # deliveries: attempts before a delivery is recorded `failed`
    backoff_s: float  # first retry delay; doubled per attempt ...
    backoff_max_s: float  # ... up to this
    http_timeout_s: float  # one HTTP request
    concurrency: int  # deliveries in flight at once
    health_interval_s: float  # how often `stream` rules read the live health hash
    volume_interval_s: float  # how often `volume` rules read the live view's sums
    max_event_age_s: int  # stream entries about events older than this never alert (a stale backlog)
    fired_ttl_s: int  # lifetime of the dedup keys {prefix}alert:fired:<rule>:<key>
    consumer: str  # this process's consumer name in the group `alerter`
    claim_idle_s: float  # entries another consumer left pending this long are claimed (XAUTOCLAIM)
    metrics_host: str  # Prometheus /metrics of the alerter: interface ...
    metrics_port: int  # ... and port (0: no endpoint)

    @property
    def redis_url(self) -> str:
        return self.common.redis_url

    @property
    def redis_prefix(self) -> str:
        return self.common.redis_prefix

    @property
    def database_url(self) -> str:
        return self.common.database_url

    @property
    def telegram(self) -> bool:
        return bool(self.telegram_token and self.telegram_chat_id)

    @property
    def webhook(self) -> bool:
        return bool(self.webhook_url)

    def channels(self) -> tuple[str, ...]:
        return (("telegram",) if self.telegram else ()) + (("webhook",) if self.webhook else ())

    def masked(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "common":
                continue
            if isinstance(value, Secret):
                value = "****" if value else ""
            out[f.name] = value
        return out


class _Env:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip()
        return value if value else default

    def number(self, name: str, default: str, lo: float, hi: float) -> float:
        raw = self.text(name, default)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
        if not lo <= value <= hi:  # also refuses NaN
            raise ConfigError(f"{name}: must be between {lo:g} and {hi:g}, got {raw!r}")
        return value

    def whole(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: must be between {lo} and {hi}, got {value}")
        return value

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = value if name not in ("LIQ_WEBHOOK_URL",) else f"{parts.scheme}://{parts.hostname}/..."
            raise ConfigError(f"{name}: expected an http or https URL, got {shown!r}")
        return value.rstrip("/")


def load_alerter_settings(env: dict[str, str] | None = None, dotenv: Path | None = Path(".env")) -> AlerterSettings:
    """Read the configuration once; raise ConfigError naming the variable on a bad value."""
    common = load_settings(env=env, dotenv=dotenv)
    merged: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        from common.config import read_dotenv  # the same .env rules as every process

        merged.update(read_dotenv(dotenv))
    merged.update(os.environ if env is None else env)
    e = _Env(merged)

    token = e.text("LIQ_TELEGRAM_TOKEN", "")
    chat_id = e.text("LIQ_TELEGRAM_CHAT_ID", "")
    if bool(token) != bool(chat_id):
        missing = "LIQ_TELEGRAM_CHAT_ID" if token else "LIQ_TELEGRAM_TOKEN"
        raise ConfigError(f"{missing}: Telegram needs both LIQ_TELEGRAM_TOKEN and LIQ_TELEGRAM_CHAT_ID")
    webhook_url = e.url("LIQ_WEBHOOK_URL", "")
    if not token and not webhook_url:
        raise ConfigError(
            "LIQ_TELEGRAM_TOKEN: no delivery channel; set it (and LIQ_TELEGRAM_CHAT_ID) or LIQ_WEBHOOK_URL"
        )
    webhook_format = e.text("LIQ_WEBHOOK_FORMAT", "json").lower()
    if webhook_format not in WEBHOOK_FORMATS:
        raise ConfigError(f"LIQ_WEBHOOK_FORMAT: one of {', '.join(WEBHOOK_FORMATS)}, got {webhook_format!r}")
    consumer = e.text("LIQ_ALERT_CONSUMER", "alerter-1")
    if not consumer.replace("-", "").replace("_", "").isalnum() or len(consumer) > 64:
        raise ConfigError(f"LIQ_ALERT_CONSUMER: letters, digits, - and _ only, got {consumer!r}")
    backoff_s = e.number("LIQ_ALERT_BACKOFF_S", "1", 0.01, 60)
    return AlerterSettings(
        common=common,
        alerts_file=Path(e.text("LIQ_ALERTS_FILE", "alerts.toml")),
        telegram_token=Secret(token),
        telegram_chat_id=chat_id,
        telegram_api_url=e.url("LIQ_TELEGRAM_API_URL", "https://api.telegram.org"),
        webhook_url=Secret(webhook_url),
        webhook_secret=Secret(e.text("LIQ_WEBHOOK_SECRET", "")),
        webhook_format=webhook_format,
        app_public_url=e.url("LIQ_APP_PUBLIC_URL", "http://127.0.0.1:8501"),
        max_attempts=e.whole("LIQ_ALERT_MAX_ATTEMPTS", 6, 1, 100),
        backoff_s=backoff_s,
        backoff_max_s=e.number("LIQ_ALERT_BACKOFF_MAX_S", "60", backoff_s, 3600),
        http_timeout_s=e.number("LIQ_ALERT_HTTP_TIMEOUT_S", "10", 0.1, 300),
        concurrency=e.whole("LIQ_ALERT_CONCURRENCY", 4, 1, 100),
        health_interval_s=e.number("LIQ_ALERT_HEALTH_INTERVAL_S", "5", 0.05, 600),
        volume_interval_s=e.number("LIQ_ALERT_VOLUME_INTERVAL_S", "1", 0.05, 600),
        max_event_age_s=e.whole("LIQ_ALERT_MAX_EVENT_AGE_S", 600, 1, 10 * 365 * 86400),
        fired_ttl_s=e.whole("LIQ_ALERT_FIRED_TTL_S", 7 * 86400, 60, 365 * 86400),
        consumer=consumer,
        claim_idle_s=e.number("LIQ_ALERT_CLAIM_IDLE_S", "60", 0, 86400),
        metrics_host=e.text("LIQ_METRICS_HOST", "127.0.0.1"),
        metrics_port=e.whole("LIQ_ALERTER_METRICS_PORT", 9465, 0, 65535),
    )
