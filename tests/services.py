"""Real Redis and TimescaleDB for tests: found at REDIS_URL / DATABASE_URL (or var/services.env,
written by scripts/services.sh). A test that needs one and cannot reach it fails; it never skips.

Each pytest session works in a database of its own (`liq_test_<random>`, created from the server
at DATABASE_URL, migrated, dropped at the end) and each test under a Redis prefix of its own, so
several test runs can share one server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from common.config import Settings, load_settings, reader_url
from db.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
TABLES = (
    "liquidations",
    "liquidations_1m",
    "liquidations_1h",
    "liquidations_1d",
    "liquidations_market_1h",
    "candles",
    "candles_1h",
    "cascades",
    "stream_coverage",
    "alerts",
    "instruments",
)


class ServiceMissing(RuntimeError):
    """A real service the tests need does not answer: start it with `make services`."""


def service_env() -> dict[str, str]:
    env: dict[str, str] = {}
    services_file = ROOT / "var" / "services.env"
    if services_file.is_file():
        for line in services_file.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k.strip()] = v.strip()
    for name in ("REDIS_URL", "DATABASE_URL"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("DATABASE_URL", "postgresql://liq@127.0.0.1:5432/liq")
    return env


def _with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def create_test_database() -> str:
    """Create and migrate a fresh database on the configured server; return its URL."""
    base = service_env()["DATABASE_URL"]
    name = f"liq_test_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise ServiceMissing(f"TimescaleDB does not answer at {base}: {exc}. Run `make services`.") from exc
    url = _with_db(base, name)
    migrate(url)
    return url


def drop_test_database(url: str) -> None:
    base = service_env()["DATABASE_URL"]
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def truncate_all(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))
        # The fold's line where a fresh schema puts it: hours from this one on come from the minutes.
        conn.execute("UPDATE rollup_fold SET folded_through = time_bucket('1 hour', now())")


def redis_client() -> redis.Redis:
    url = service_env()["REDIS_URL"]
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceMissing(f"Redis does not answer at {url}: {exc}. Run `make services`.") from exc
    return client


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def make_settings(database_url: str, redis_prefix: str, tmp: Path, **overrides: str) -> Settings:
    """Settings for one test: its own database and Redis prefix, non-live source label `test`."""
    env = {
        "DATABASE_URL": database_url,
        "LIQ_APP_DATABASE_URL": reader_url(database_url, ""),
        "REDIS_URL": service_env()["REDIS_URL"],
        "LIQ_REDIS_PREFIX": redis_prefix,
        "LIQ_SPOOL_DIR": str(tmp / "spool"),
        "LIQ_NONLIVE_SOURCE": "test",
        "LIQ_SYMBOLS": "BTCUSDT",  # the tests' own symbol; LIQ_SYMBOLS=ALL is tested on its own
        "LIQ_EXCHANGES": "binance,bybit",  # the tests' own venues; all five are tested on their own
        "LIQ_METRICS_PORT": "0",  # several services may run at once: a test that wants it picks a port
    }
    env.update(overrides)
    return load_settings(env=env, dotenv=None)


def new_prefix() -> str:
    return f"liqtest:{secrets.token_hex(4)}:"


def iter_prefix(client: redis.Redis, prefix: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=f"{prefix}*", count=1000)
