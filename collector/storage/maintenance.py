"""Retention: drop whole chunks past their age (raw and candles after `retention_raw_days`, the
rollups and hourly candles after `retention_rollup_days`). Runs at start and then every hour; a database that does
not answer (within the connect timeout and the batch deadline) is skipped until the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from common.config import Settings

log = logging.getLogger("collector.maintenance")

INTERVAL_S = 3600.0

_DROP = "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => now() - make_interval(days => %s))"


def retention_plan(settings: Settings) -> list[tuple[str, int]]:
    """(hypertable, days to keep) for every table with a retention."""
    return [
        ("liquidations", settings.retention_raw_days),
        ("candles", settings.retention_raw_days),
        ("liquidations_1m", settings.retention_rollup_days),
        ("liquidations_1h", settings.retention_rollup_days),
        ("liquidations_1d", settings.retention_rollup_days),
        ("liquidations_market_1h", settings.retention_rollup_days),
        ("candles_1h", settings.retention_rollup_days),
    ]


async def apply_retention(
    database_url: str, plan: list[tuple[str, int]], *, connect_timeout: float = 5.0
) -> dict[str, int]:
    """Drop chunks older than each table's retention; return the chunks dropped per table."""
    dropped: dict[str, int] = {}
    connect = psycopg.AsyncConnection.connect(
        database_url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
    )
    async with await connect as conn:
        for table, days in plan:
            cur = await conn.execute(_DROP, (table, days))
            row = await cur.fetchone()
            dropped[table] = int(row[0]) if row else 0
    if any(dropped.values()):
        log.info("retention: dropped chunks %s", dropped)
    return dropped


async def run_maintenance(
    settings: Settings,
    stop: asyncio.Event,
    interval_s: float = INTERVAL_S,
    is_leader: Callable[[], bool] = lambda: True,
) -> None:
    """Apply retention now and every `interval_s` until `stop` is set, on the leading collector only
    (collector/leader.py: several collectors may share one database)."""
    plan = retention_plan(settings)
    while not stop.is_set():
        if not is_leader():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(interval_s, 5.0))
            continue
        try:
            async with asyncio.timeout(settings.db_batch_timeout_s):
                await apply_retention(settings.database_url, plan, connect_timeout=settings.db_connect_timeout_s)
        except psycopg.Error as exc:
            log.warning("retention skipped this round: %s", " ".join(str(exc).split()))
        except TimeoutError:
            log.warning("retention skipped this round: no answer within %g s", settings.db_batch_timeout_s)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
