"""Running the collector service in-process and reading totals back from both stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import psycopg
import redis

from collector.service import CollectorService
from common.config import Settings
from common.events import ms_to_datetime
from common.live_view import Keys, decode_liquidation

Totals = dict[tuple[str, str], tuple[int, Decimal]]

ROLLUPS_EQUAL_RAW = """
SELECT (SELECT array_agg(x ORDER BY x) FROM (SELECT (bucket, exchange, side, events, value_usd)::text x FROM liquidations_1m) a)
     = (SELECT array_agg(x ORDER BY x) FROM (SELECT (time_bucket('1 minute', time), exchange, side, count(*), sum(value_usd))::text x
                                              FROM liquidations GROUP BY time_bucket('1 minute', time), exchange, side) b)
"""


async def wait_until(condition: Callable[[], bool], within: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_service(settings: Settings, *, with_adapters: bool = False) -> AsyncIterator[CollectorService]:
    service = CollectorService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, with_adapters=with_adapters))
    await asyncio.wait_for(service.ready.wait(), timeout=30)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


def redis_totals(client: redis.Redis, prefix: str, lo_ms: int, hi_ms: int) -> Totals:
    totals: Totals = {}
    for member in client.zrangebyscore(Keys(prefix).liqs, lo_ms, hi_ms):
        d = decode_liquidation(member)
        k = (d["exchange"], str(d["side"]))
        n, usd = totals.get(k, (0, Decimal(0)))
        totals[k] = (n + 1, usd + d["value_usd"])
    return totals


def db_totals(url: str, lo_ms: int, hi_ms: int) -> Totals:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT exchange, side, count(*), sum(value_usd) FROM liquidations WHERE time BETWEEN %s AND %s GROUP BY 1, 2",
            (ms_to_datetime(lo_ms), ms_to_datetime(hi_ms)),
        ).fetchall()
    return {(r[0], r[1]): (int(r[2]), r[3]) for r in rows}


def db_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM liquidations").fetchone()
    return int(row[0]) if row else 0


def published_state(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """The collector's state as it publishes it for the live page ({} before the first publish)."""
    raw = client.hget(Keys(prefix).collector, "state")
    return dict(json.loads(raw)) if raw else {}
