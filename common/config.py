"""The one typed configuration of liquidation-aggregator.

Values come from the environment, then from an optional `.env` file in the working directory,
then from the defaults below. `load_settings()` reads them once; every process calls it at start
and passes the result down. A wrong value raises `ConfigError` naming the variable, so a bad
deployment fails at start instead of misbehaving later. Secrets never appear in `repr()`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from common.symbols import valid_symbol
from common.venues import LIVE_HOSTS, NAMES, VENUES

# The real exchange endpoints are in the venue registry (common.venues): only their WebSocket hosts
# label events `live`; anything else (replay, fake servers) never is. REST hosts never label events.
REAL_HOSTS = LIVE_HOSTS
ALL = "ALL"  # LIQ_SYMBOLS / LIQ_CANDLE_SYMBOLS: every contract the venues list

SUPPORTED_EXCHANGES = NAMES
CASCADE_RULES = ("relative", "fixed")  # collector.cascades.RELATIVE, FIXED
_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class Secret(str):
    """A string that does not show itself in reprs or logs."""

    def __repr__(self) -> str:
        return "Secret('****')" if self else "Secret('')"


@dataclass(frozen=True)
class Settings:
    database_url: Secret
    app_database_url: Secret
    reader_password: Secret
    redis_url: Secret
    redis_prefix: str
    exchanges: tuple[str, ...]
    symbols: tuple[str, ...]
    ws_urls: tuple[tuple[str, str], ...]  # (venue, WebSocket URL) for every registry venue
    nonlive_source: str
    institutional_usd: Decimal
    cascade_window_s: int
    cascade_min_events: int
    cascade_min_usd: Decimal  # the absolute floor (relative rule) or the threshold (fixed rule)
    cascade_rule: str  # "relative" | "fixed" (collector/cascades.py states both)
    cascade_relative_x: Decimal  # relative: T = max(min_usd, x * the instrument's 24 h USD per window)
    cascade_end_x: Decimal  # relative: a cascade ends below end_x * that baseline per window
    cascade_max_s: int  # relative: no cascade lasts longer
    retention_raw_days: int
    retention_rollup_days: int
    app_password: Secret
    queue_size: int
    batch_max: int
    flush_interval_ms: int
    spool_dir: Path
    spool_max_bytes: int
    silence_timeout_s: float
    max_event_age_s: int
    log_level: str
    # Deadlines: a service that hangs is an outage (logged, spooled, shown), never a silent stall.
    db_connect_timeout_s: float  # opening a TimescaleDB connection
    db_statement_timeout_s: float  # one statement (server side, statement_timeout)
    db_batch_timeout_s: float  # one whole batch transaction, client side
    redis_timeout_s: float  # connect and every Redis command
    # Instrument discovery (collector/instruments): the venues' REST base URLs and the refresh period.
    rest_urls: tuple[tuple[str, str], ...]  # (venue, REST base URL) for every registry venue
    instruments_refresh_s: int
    candle_symbols: tuple[str, ...]  # ("ALL",) or the symbols whose candles are kept
    alert_stream_min_usd: Decimal | None  # the alerter's stream: liquidations of at least this USD (None: no stream)
    metrics_host: str  # Prometheus /metrics of the collector: interface ...
    metrics_port: int  # ... and port (0: no endpoint)

    @property
    def all_symbols(self) -> bool:
        """LIQ_SYMBOLS=ALL: follow every linear USDT and USDC contract the venues list."""
        return self.symbols == (ALL,)

    @property
    def default_symbol(self) -> str:
        """The symbol a view opens on: the whole market (ALL) unless a list names the first one."""
        return self.symbols[0]

    @property
    def configured_symbols(self) -> tuple[str, ...]:
        """The explicit LIQ_SYMBOLS list; empty for ALL (the venues' lists decide)."""
        return () if self.all_symbols else self.symbols

    @property
    def all_candle_symbols(self) -> bool:
        """LIQ_CANDLE_SYMBOLS=ALL: candles for every tracked symbol."""
        return self.candle_symbols == (ALL,)

    def ws_url(self, venue: str) -> str:
        """The venue's WebSocket URL: LIQ_<VENUE>_WS_URL, else the real endpoint."""
        return dict(self.ws_urls)[venue]

    def rest_url(self, venue: str) -> str:
        """The venue's REST base URL (instrument lists): LIQ_<VENUE>_REST_URL, else the real host."""
        return dict(self.rest_urls)[venue]

    def source_for(self, ws_url: str) -> str:
        """`live` only for the real exchange hosts; anything else gets the non-live label."""
        host = urlsplit(ws_url).hostname or ""
        return "live" if host in REAL_HOSTS else self.nonlive_source

    def masked(self) -> dict[str, object]:
        """All settings with secrets replaced, for the start-up log line."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = _mask_url(value) if "://" in value else ("****" if value else "")
            out[f.name] = value
        return out


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
    return urlunsplit(parts._replace(netloc=netloc))


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:]
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{lineno}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


class _Reader:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip()
        return value if value else default

    def whole(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: must be between {lo} and {hi}, got {value}")
        return value

    def decimal(self, name: str, default: str, lo: Decimal) -> Decimal:
        raw = self.text(name, default)
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
        if not value.is_finite() or value < lo:
            raise ConfigError(f"{name}: must be a finite number >= {lo}, got {raw!r}")
        return value

    def seconds(self, name: str, default: str, lo: float, hi: float) -> float:
        raw = self.text(name, default)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
        if not lo <= value <= hi:  # also refuses NaN
            raise ConfigError(f"{name}: must be between {lo:g} and {hi:g} seconds, got {raw!r}")
        return value

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{name}: expected a {'/'.join(schemes)} URL, got {_mask_url(value)!r}")
        return value

    def csv(self, name: str, default: str) -> tuple[str, ...]:
        items = [p.strip() for p in self.text(name, default).split(",")]
        items = [p for p in items if p]
        if not items:
            raise ConfigError(f"{name}: must list at least one value")
        return tuple(dict.fromkeys(items))

    def symbols(self, name: str, default: str) -> tuple[str, ...]:
        """`ALL` (alone) or a list of venue symbols, upper case."""
        symbols = tuple(s.upper() for s in self.csv(name, default))
        if ALL in symbols:
            if len(symbols) > 1:
                raise ConfigError(f"{name}: ALL follows every listed symbol and cannot be combined with others")
            return (ALL,)
        for symbol in symbols:
            if not valid_symbol(symbol):
                raise ConfigError(f"{name}: {symbol!r} is not a venue symbol like BTCUSDT")
        return symbols


def reader_url(database_url: str, password: str) -> str:
    """The app's URL: same server and database as DATABASE_URL, as the read-only role."""
    parts = urlsplit(database_url)
    auth = "liq_reader" + (f":{quote(password, safe='')}" if password else "")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{auth}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(env: dict[str, str] | None = None, dotenv: Path | None = Path(".env")) -> Settings:
    """Read the configuration once: environment first, then `.env`, then defaults."""
    merged: dict[str, str] = read_dotenv(dotenv) if dotenv is not None else {}
    merged.update(os.environ if env is None else env)
    r = _Reader(merged)

    database_url = r.url("DATABASE_URL", "postgresql://liq@127.0.0.1:5432/liq", ("postgresql", "postgres"))
    reader_password = r.text("LIQ_READER_PASSWORD", "")
    app_database_url = r.url(
        "LIQ_APP_DATABASE_URL", reader_url(database_url, reader_password), ("postgresql", "postgres")
    )

    exchanges = tuple(e.lower() for e in r.csv("LIQ_EXCHANGES", ",".join(NAMES)))
    for exchange in exchanges:
        if exchange not in SUPPORTED_EXCHANGES:
            raise ConfigError(
                f"LIQ_EXCHANGES: unknown exchange {exchange!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}"
            )
    symbols = r.symbols("LIQ_SYMBOLS", ALL)

    nonlive = r.text("LIQ_NONLIVE_SOURCE", "replay").lower()
    if not _SOURCE_RE.match(nonlive) or nonlive == "live":
        raise ConfigError(f"LIQ_NONLIVE_SOURCE: must be a short lower-case label other than 'live', got {nonlive!r}")

    prefix = r.text("LIQ_REDIS_PREFIX", "liq:")
    if not re.match(r"^[A-Za-z0-9_:.-]{1,64}$", prefix):
        raise ConfigError(f"LIQ_REDIS_PREFIX: letters, digits and _:.- only, got {prefix!r}")

    cascade_rule = r.text("LIQ_CASCADE_RULE", "relative").lower()
    if cascade_rule not in CASCADE_RULES:
        raise ConfigError(f"LIQ_CASCADE_RULE: one of {', '.join(CASCADE_RULES)}, got {cascade_rule!r}")
    cascade_window_s = r.whole("LIQ_CASCADE_WINDOW_S", 60, 1, 3600)
    cascade_relative_x = r.decimal("LIQ_CASCADE_RELATIVE_X", "10", Decimal(1))
    cascade_end_x = r.decimal("LIQ_CASCADE_END_X", "3", Decimal(0))
    if cascade_end_x >= cascade_relative_x:
        raise ConfigError(
            f"LIQ_CASCADE_END_X: must be below LIQ_CASCADE_RELATIVE_X ({cascade_relative_x}), got {cascade_end_x}"
        )
    cascade_max_s = r.whole("LIQ_CASCADE_MAX_S", 900, 60, 86_400)
    if cascade_max_s < cascade_window_s:
        raise ConfigError(
            f"LIQ_CASCADE_MAX_S: must be at least LIQ_CASCADE_WINDOW_S ({cascade_window_s}), got {cascade_max_s}"
        )

    log_level = r.text("LIQ_LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"LIQ_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR, got {log_level!r}")

    return Settings(
        database_url=Secret(database_url),
        app_database_url=Secret(app_database_url),
        reader_password=Secret(reader_password),
        redis_url=Secret(r.url("REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix"))),
        redis_prefix=prefix,
        exchanges=exchanges,
        symbols=symbols,
        ws_urls=tuple(
            (v.name, r.url(f"{v.env_prefix}_WS_URL", v.ws_url, ("ws", "wss")).rstrip("/")) for v in VENUES.values()
        ),
        nonlive_source=nonlive,
        institutional_usd=r.decimal("LIQ_INSTITUTIONAL_USD", "100000", Decimal(0)),
        cascade_window_s=cascade_window_s,
        cascade_min_events=r.whole("LIQ_CASCADE_MIN_EVENTS", 5, 2, 10_000),
        cascade_min_usd=r.decimal(
            "LIQ_CASCADE_MIN_USD", "20000" if cascade_rule == "relative" else "100000", Decimal(0)
        ),
        cascade_rule=cascade_rule,
        cascade_relative_x=cascade_relative_x,
        cascade_end_x=cascade_end_x,
        cascade_max_s=cascade_max_s,
        retention_raw_days=r.whole("LIQ_RETENTION_RAW_DAYS", 90, 1, 36500),
        retention_rollup_days=r.whole("LIQ_RETENTION_ROLLUP_DAYS", 730, 1, 36500),
        app_password=Secret(r.text("LIQ_APP_PASSWORD", "")),
        queue_size=r.whole("LIQ_QUEUE_SIZE", 100_000, 100, 10_000_000),
        batch_max=r.whole("LIQ_BATCH_MAX", 5_000, 1, 1_000_000),
        flush_interval_ms=r.whole("LIQ_FLUSH_INTERVAL_MS", 100, 1, 60_000),
        spool_dir=Path(r.text("LIQ_SPOOL_DIR", "var/spool")),
        spool_max_bytes=r.whole("LIQ_SPOOL_MAX_BYTES", 1 << 30, 1 << 16, 1 << 40),
        silence_timeout_s=float(r.whole("LIQ_SILENCE_TIMEOUT_S", 30, 2, 3600)),
        max_event_age_s=r.whole("LIQ_MAX_EVENT_AGE_S", 3600, 10, 10 * 365 * 86400),
        log_level=log_level,
        db_connect_timeout_s=r.seconds("LIQ_DB_CONNECT_TIMEOUT_S", "5", 1, 600),
        db_statement_timeout_s=r.seconds("LIQ_DB_STATEMENT_TIMEOUT_S", "30", 1, 3600),
        db_batch_timeout_s=r.seconds("LIQ_DB_BATCH_TIMEOUT_S", "60", 1, 3600),
        redis_timeout_s=r.seconds("LIQ_REDIS_TIMEOUT_S", "5", 0.1, 600),
        rest_urls=tuple(
            (v.name, r.url(f"{v.env_prefix}_REST_URL", v.rest_url, ("http", "https")).rstrip("/"))
            for v in VENUES.values()
        ),
        instruments_refresh_s=r.whole("LIQ_INSTRUMENTS_REFRESH_S", 3600, 60, 86400),
        candle_symbols=r.symbols("LIQ_CANDLE_SYMBOLS", ALL),
        alert_stream_min_usd=(
            None
            if r.text("LIQ_ALERT_STREAM_MIN_USD", "10000").lower() == "off"
            else r.decimal("LIQ_ALERT_STREAM_MIN_USD", "10000", Decimal(0))
        ),
        metrics_host=r.text("LIQ_METRICS_HOST", "127.0.0.1"),
        metrics_port=r.whole("LIQ_METRICS_PORT", 9464, 0, 65535),
    )
