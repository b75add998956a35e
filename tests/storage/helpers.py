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

_TIER_EQUAL_RAW = """
(SELECT array_agg(x ORDER BY x) FROM (
    SELECT (bucket, exchange, {symbol} side, source, sum(events), {quantity} sum(value_usd), max(max_value_usd))::text x
    FROM {table} GROUP BY bucket, exchange, {symbol} side, source) a)
IS NOT DISTINCT FROM
(SELECT array_agg(x ORDER BY x) FROM (
    SELECT (time_bucket('{width}', time), exchange, {symbol} side, source, count(*), {quantity} sum(value_usd),
            max(value_usd))::text x
    FROM liquidations {raw_filter} GROUP BY time_bucket('{width}', time), exchange, {symbol} side, source) b)
"""


def tier_equals_raw(table: str, width: str, raw_filter: str = "") -> str:
    """SQL, true when the rollup `table` (or view) equals the raw rows `raw_filter` keeps, summed per
    `width`, bucket for bucket (a bucket's rows summed: a day the fold's line cuts has a row on each
    side in the views). The whole market's hours have no symbol and no quantity."""
    market = table.startswith("liquidations_market")
    return _TIER_EQUAL_RAW.format(
        table=table,
        width=width,
        symbol="" if market else "symbol,",
        quantity="" if market else "sum(quantity),",
        raw_filter=raw_filter,
    )


# Every rollup as readers see it (the minutes, and the hours, days and the market's hours through
# their `_all` views: folded rows before the fold's line, minutes after it) equals the raw rows.
ROLLUPS_EQUAL_RAW = "SELECT " + " AND ".join(
    tier_equals_raw(table, width)
    for table, width in [
        ("liquidations_1m", "1 minute"),
        ("liquidations_1h_all", "1 hour"),
        ("liquidations_1d_all", "1 day"),
        ("liquidations_market_1h_all", "1 hour"),
    ]
)


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
