"""Fixtures of the alerter tests: fake endpoints, a clean `alerts` table, a running alerter."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerter.rules import load_rules
from alerter.service import AlerterService
from alerter.settings import AlerterSettings, load_alerter_settings
from alerter.stream import stream_key
from common.config import reader_url
from tests import services
from tests.alerter.fakes import FakeHttp

SECRET = "s3cret"
APP = "http://app.test"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def telegram() -> Iterator[FakeHttp]:
    fake = FakeHttp()
    yield fake
    fake.close()


@pytest.fixture
def webhook() -> Iterator[FakeHttp]:
    fake = FakeHttp(reply=b"ok")
    yield fake
    fake.close()


@pytest.fixture
def alerts_db(clean_db: str) -> str:
    """The session database with `alerts` emptied too (tests/services.py TABLES predates it)."""
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("TRUNCATE alerts")
    return clean_db


def alert_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT rule, kind, key, status, attempts, channel, last_error, message FROM alerts ORDER BY id"
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class Alerter:
    """Builds settings and rules for one test and runs `AlerterService` in the test's loop."""

    def __init__(self, db: str, prefix: str, tmp: Path, telegram: FakeHttp, webhook: FakeHttp) -> None:
        self.db, self.prefix, self.tmp = db, prefix, tmp
        self.telegram, self.webhook = telegram, webhook
        self.redis = services.redis_client()
        self.service: AlerterService | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def settings(self, rules: str, **env: str) -> AlerterSettings:
        path = self.tmp / "alerts.toml"
        path.write_text(rules)
        base = {
            "DATABASE_URL": self.db,
            "LIQ_APP_DATABASE_URL": reader_url(self.db, ""),
            "REDIS_URL": services.service_env()["REDIS_URL"],
            "LIQ_REDIS_PREFIX": self.prefix,
            "LIQ_ALERTS_FILE": str(path),
            "LIQ_TELEGRAM_TOKEN": "123:abc",
            "LIQ_TELEGRAM_CHAT_ID": "-100200",
            "LIQ_TELEGRAM_API_URL": self.telegram.url,
            "LIQ_WEBHOOK_URL": f"{self.webhook.url}/hook",
            "LIQ_WEBHOOK_SECRET": SECRET,
            "LIQ_APP_PUBLIC_URL": APP,
            "LIQ_ALERT_BACKOFF_S": "0.01",
            "LIQ_ALERT_BACKOFF_MAX_S": "0.05",
            "LIQ_ALERT_MAX_ATTEMPTS": "3",
            "LIQ_ALERT_HEALTH_INTERVAL_S": "0.05",
            "LIQ_ALERT_CLAIM_IDLE_S": "0",
            "LIQ_ALERTER_METRICS_PORT": "0",  # a test that wants it picks a free port
        }
        base.update(env)
        return load_alerter_settings(env=base, dotenv=None)

    async def start(self, rules: str, **env: str) -> AlerterService:
        settings = self.settings(rules, **env)
        self.service = AlerterService(settings, load_rules(settings.alerts_file))
        self.service.reader.block_ms = 50
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.service.run(self._stop))
        await asyncio.wait_for(self.service.ready.wait(), 5)
        return self.service

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 10)
            self._task = None

    def append(self, kind: str, data: dict[str, Any]) -> None:
        self.redis.xadd(stream_key(self.prefix), {"kind": kind, "data": json.dumps(data)})

    async def settle(self, entries: int, within_s: float = 5.0) -> None:
        """Wait until the alerter acknowledged `entries` entries and no delivery is in flight."""
        assert self.service is not None
        deadline = time.monotonic() + within_s
        while self.service.reader.handled < entries or self.service.deliverer.in_flight:
            assert time.monotonic() < deadline, f"handled {self.service.reader.handled} of {entries}"
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.redis.close()


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def alerter(
    alerts_db: str, redis_prefix: str, tmp_path: Path, telegram: FakeHttp, webhook: FakeHttp
) -> AsyncIterator[Alerter]:
    a = Alerter(alerts_db, redis_prefix, tmp_path, telegram, webhook)
    yield a
    await a.stop()
    a.close()


def liq(
    symbol: str = "BTCUSDT",
    *,
    exchange: str = "binance",
    side: str = "LONG",
    quantity: str = "2",
    price: str = "100000",
    time_ms: int | None = None,
    key: int | None = None,
    source: str = "live",
) -> dict[str, Any]:
    t = now_ms() if time_ms is None else time_ms
    value = Decimal(quantity) * Decimal(price)
    return {
        "exchange": exchange,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        "value_usd": f"{value:f}",
        "time_ms": t,
        "key": str(key if key is not None else hash((exchange, symbol, t, side, quantity, price)) & (2**62 - 1)),
        "source": source,
        "sampled": exchange != "bybit",
    }


def cascade(
    id_: int,
    usd_by: dict[str, str],
    *,
    active: bool = True,
    symbol: str = "BTC-USDT-PERP",
    side: str = "LONG",
    start_ms: int,
    end_ms: int,
    events: int = 10,
    risk: int = 50,
    source: str = "live",
) -> dict[str, Any]:
    total = sum(Decimal(v) for v in usd_by.values())
    return {
        "id": id_,
        "symbol": symbol,
        "side": side,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "events": events,
        "quantity": f"{total / 100000:f}",
        "value_usd": f"{total:f}",
        "exchanges": sorted(usd_by),
        "usd_by_exchange": usd_by,
        "risk_score": risk,
        "active": active,
        "cross_exchange": len(usd_by) >= 2,
        "source": source,
    }
