"""Faults on servers of the test's own (the shared services are never stopped)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from itertools import zip_longest
from pathlib import Path

import psycopg
import pytest
import redis

from collector.replay_server import BinanceServer, BybitServer
from common.live_view import WINDOW_MS
from tests import services
from tests.e2e.own_servers import OwnPostgres
from tests.e2e.process import collector_env, spooled_liquidations, start_collector
from tests.e2e.script import build_session, cascade_expectation
from tests.storage.factories import liq, now_ms
from tests.storage.helpers import (
    ROLLUPS_EQUAL_RAW,
    db_count,
    db_totals,
    redis_totals,
    running_service,
    wait_until,
)


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.init()
    yield server
    server.destroy()


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


async def test_postgres_down_mid_stream_spools_then_replays_exactly_once(
    own_pg: OwnPostgres, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    settings = services.make_settings(own_pg.url, redis_prefix, tmp_path)
    now = now_ms()
    events = [liq(("bybit", "binance")[i % 2], now - 600_000 + i * 997, qty=f"0.0{i % 9 + 1}") for i in range(600)]
    async with running_service(settings) as service:
        for ev in events[:200]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(own_pg.url) == 200, what="first 200 rows")
        await asyncio.to_thread(own_pg.stop)
        for ev in events[200:] + events[150:250]:  # re-deliveries too
            await service.queue.put(ev)
        await wait_until(lambda: service.spool.pending_events >= 400, what="spooled while the database is down")
        assert service.pipeline.state()["spool"]["state"] == "pending"
        await asyncio.to_thread(own_pg.start)
        await wait_until(lambda: service.spool.empty, within=90, what="spool replayed")
        await wait_until(lambda: db_count(own_pg.url) == 600, what="all rows")
        lo, hi = now - WINDOW_MS, now_ms()
        await wait_until(
            lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == db_totals(own_pg.url, lo, hi), what="redis"
        )
    assert _scalar(own_pg.url, "SELECT count(DISTINCT event_key) FROM liquidations") == 600
    assert _scalar(own_pg.url, ROLLUPS_EQUAL_RAW) is True
    assert not (tmp_path / "spool" / "spool.ndjson").read_bytes()


async def test_sigterm_then_restart_of_the_collector_process(clean_db: str, redis_prefix: str, tmp_path: Path) -> None:
    session = build_session(now_ms() - 30 * 60_000, background=60)
    log = tmp_path / "collector.log"
    async with BinanceServer() as binance, BybitServer() as bybit:
        env = collector_env(
            clean_db, redis_prefix, tmp_path, LIQ_BINANCE_WS_URL=binance.url, LIQ_BYBIT_WS_URL=bybit.url
        )
        proc = start_collector(env, log)
        try:
            await binance.wait_connected(1, within=60)
            await bybit.wait_connected(1, within=60)
            for b, y in zip(session.binance[:40], session.bybit[:40], strict=True):
                await binance.push(b)
                await bybit.push(y)
            await wait_until(lambda: db_count(clean_db) == 200, what="first part stored")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
            assert time.monotonic() - sent < 10
            proc = start_collector(env, log)
            await binance.wait_connected(2, within=60)
            await bybit.wait_connected(2, within=60)
            # 10 re-deliveries on each venue, then the rest, interleaved as the venues send them:
            # the cascade detector sees events in arrival order, as in production.
            for b, y in zip_longest(session.binance[30:], session.bybit[30:]):
                if b is not None:
                    await binance.push(b)
                if y is not None:
                    await bybit.push(y)
            unique = sum(n for n, _ in session.totals().values())
            await wait_until(lambda: db_count(clean_db) == unique, what="everything stored")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
    assert code == 0, log.read_text()[-3000:]
    assert db_totals(clean_db, 0, now_ms()) == session.totals()
    # The console announces the cascade as the router step that found it saw it (its count depends on
    # how the venues' frames were batched); the table holds the whole burst once the process is gone.
    text = log.read_text()
    assert "CROSS-EXCHANGE CASCADE DETECTED: " in text
    count, usd, counts = cascade_expectation(session)
    with psycopg.connect(clean_db, connect_timeout=5) as conn:
        cascades = conn.execute("SELECT events, value_usd, events_by_exchange, cross_exchange FROM cascades").fetchall()
    assert cascades == [(count, usd, counts, True)] and (count, usd) == (9, Decimal(1_007_031))
    assert text.count("collector stopped") >= 2


async def test_sigkill_with_database_down_replays_the_spool_first(
    own_pg: OwnPostgres, redis_prefix: str, tmp_path: Path
) -> None:
    """Spooled batches survive SIGKILL and are written before anything new at the next start."""
    session = build_session(now_ms() - 20 * 60_000, background=30)
    log = tmp_path / "collector.log"
    _scalar(own_pg.url, "SELECT 1")
    with psycopg.connect(own_pg.url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE liquidations, liquidations_1m, liquidations_1h, liquidations_1d, liquidations_market_1h, cascades, stream_coverage, candles"
        )
    async with BinanceServer() as binance, BybitServer() as bybit:
        env = collector_env(
            own_pg.url, redis_prefix, tmp_path, LIQ_BINANCE_WS_URL=binance.url, LIQ_BYBIT_WS_URL=bybit.url
        )
        proc = start_collector(env, log)
        try:
            await binance.wait_connected(1, within=60)
            await bybit.wait_connected(1, within=60)
            await asyncio.to_thread(own_pg.stop)
            for b in session.binance:
                await binance.push(b)
            for y in session.bybit:
                await bybit.push(y)
            spool = tmp_path / "spool" / "spool.ndjson"
            unique = sum(n for n, _ in session.totals().values())
            await wait_until(lambda: spool.exists() and spool.read_bytes().count(b'"l":[[') >= 1, what="spooled")
            await wait_until(lambda: len(spooled_liquidations(spool)) == unique, within=60, what="all spooled")
            proc.kill()
            await asyncio.to_thread(proc.wait, 15)
            await asyncio.to_thread(own_pg.start)
            proc = start_collector(env, log)
            await wait_until(lambda: db_count(own_pg.url) == unique, within=90, what="spool replayed after restart")
            await wait_until(lambda: spool.stat().st_size == 0, what="spool emptied")
            # The killed run's two streams are closed once they are stale (a live collector beside
            # this one refreshes its own every few seconds).
            closed = "SELECT count(*) FROM stream_coverage WHERE reason = 'collector stopped'"
            await wait_until(
                lambda: _scalar(own_pg.url, closed) == 2, within=60, what="the killed run's streams closed"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
    assert code == 0, log.read_text()[-3000:]
    assert db_totals(own_pg.url, 0, now_ms()) == session.totals()
    assert _scalar(own_pg.url, ROLLUPS_EQUAL_RAW) is True
    # the killed run's connections were closed at its last heartbeat, not left open
    assert _scalar(own_pg.url, "SELECT count(*) FROM stream_coverage WHERE disconnected_at IS NULL") == 0
