"""How often a cascade is written (collector/pipeline.py, CASCADE_FLUSH_S): its start, its turning
cross-venue and its end at once, its running totals in between at most once per interval, and the
latest totals always reach Redis, the alert stream and TimescaleDB, also on a feed gone quiet."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from collector import pipeline
from common.events import Liquidation
from common.live_view import Keys, decode_cascade
from tests import services
from tests.storage.factories import liq, now_ms
from tests.storage.helpers import running_service, wait_until

FLUSH_S = 6.0  # long beside the checks below, so "not yet" cannot be a slow machine's luck


def member(time_ms: int, qty: str = "1", symbol: str = "BTCUSDT") -> Liquidation:
    """Old by exchange time but received now (not "quiet by wall clock")."""
    return liq(time_ms=time_ms, qty=qty, symbol=symbol, received_ms=now_ms())


def live_counts(client: redis.Redis, prefix: str) -> list[tuple[int, bool]]:
    return [(c.count, c.active) for c in map(decode_cascade, client.hvals(Keys(prefix).cascades))]


def live_by_symbol(client: redis.Redis, prefix: str) -> dict[str, int]:
    return {c.symbol: c.count for c in map(decode_cascade, client.hvals(Keys(prefix).cascades))}


def stream_entries(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    """The cascade updates on the alert stream, in order (one entry a batch holds a list)."""
    return [
        e for _, f in client.xrange(Keys(prefix).stream) if f[b"kind"] == b"cascades" for e in json.loads(f[b"data"])
    ]


def stream_counts(client: redis.Redis, prefix: str) -> list[tuple[int, bool]]:
    return [(e["events"], e["active"]) for e in stream_entries(client, prefix)]


def db_counts(url: str) -> list[tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(r[0]), bool(r[1])) for r in conn.execute("SELECT events, active FROM cascades").fetchall()]


async def test_a_cascade_starts_and_ends_at_once_and_its_totals_wait_for_the_interval(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "CASCADE_FLUSH_S", FLUSH_S)
    settings = services.make_settings(
        clean_db, redis_prefix, tmp_path, LIQ_CASCADE_RULE="fixed", LIQ_CASCADE_MIN_USD="100000"
    )
    t = now_ms() - 300_000  # exchange time: the window ends by data, not by the wall clock
    async with running_service(settings) as service:
        # a new prefix is rebuilt from TimescaleDB first, which writes the detector's current totals
        await wait_until(lambda: service.live.rebuilt_ms is not None, within=30, what="the live view rebuilt")
        for i in range(5):  # 5 x $50,000 within 60 s: a cascade
            await service.queue.put(member(t + i * 1_000))
        await wait_until(lambda: live_counts(sync_redis, redis_prefix) == [(5, True)], within=10, what="the start")
        await wait_until(lambda: db_counts(clean_db) == [(5, True)], within=10, what="the start stored")
        sent = time.monotonic()  # they wait from their routing on, which is after this
        for i in range(5, 8):  # three more members: totals only
            await service.queue.put(member(t + i * 1_000))
        routed = service.pipeline.routed_events
        await wait_until(lambda: service.pipeline.routed_events >= routed + 3, within=10, what="members routed")
        waited = time.monotonic()
        await asyncio.sleep(1.0)
        assert time.monotonic() - waited < FLUSH_S - 2  # else the check below proves nothing
        assert live_counts(sync_redis, redis_prefix) == [(5, True)]
        assert stream_counts(sync_redis, redis_prefix) == [(5, True)]
        # the feed is quiet now: the router still writes the waiting totals when they are due
        await wait_until(
            lambda: live_counts(sync_redis, redis_prefix) == [(8, True)], within=FLUSH_S + 5, what="totals"
        )
        assert time.monotonic() - sent >= FLUSH_S - 0.2
        assert stream_counts(sync_redis, redis_prefix) == [(5, True), (8, True)]
        await wait_until(lambda: db_counts(clean_db) == [(8, True)], within=10, what="the totals stored")
        # a member from another venue turns it cross-venue: that goes at once (cross-venue rules)
        await service.queue.put(liq("okx", t + 9_000, qty="1", symbol="BTC-USDT-SWAP", received_ms=now_ms()))
        crossed = time.monotonic()
        await wait_until(lambda: live_counts(sync_redis, redis_prefix) == [(9, True)], within=FLUSH_S, what="cross")
        assert time.monotonic() - crossed < FLUSH_S - 1
        assert decode_cascade(sync_redis.hvals(Keys(redis_prefix).cascades)[0]).cross_exchange
        # one more member, then an event 61 s after it: the end goes at once with the latest totals
        await service.queue.put(member(t + 10_000))
        await service.queue.put(member(t + 10_000 + 61_000, qty="0.01"))
        ended = time.monotonic()
        await wait_until(lambda: live_counts(sync_redis, redis_prefix) == [(10, False)], within=FLUSH_S, what="the end")
        assert time.monotonic() - ended < FLUSH_S - 1
        assert stream_counts(sync_redis, redis_prefix) == [(5, True), (8, True), (9, True), (10, False)]
        await wait_until(lambda: db_counts(clean_db) == [(10, False)], within=10, what="the end stored")


async def test_each_waiting_cascade_keeps_its_own_interval(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting totals are not all written in one batch: each cascade is due CASCADE_FLUSH_S after it
    began to wait (a whole-market burst holds a thousand, and one batch of them all held the router
    up for 100 ms once a second)."""
    monkeypatch.setattr(pipeline, "CASCADE_FLUSH_S", FLUSH_S)
    settings = services.make_settings(
        clean_db, redis_prefix, tmp_path, LIQ_CASCADE_RULE="fixed", LIQ_CASCADE_MIN_USD="100000"
    )
    t = now_ms() - 300_000
    btc, eth = "BTC-USDT-PERP", "ETH-USDT-PERP"
    async with running_service(settings) as service:
        await wait_until(lambda: service.live.rebuilt_ms is not None, within=30, what="the live view rebuilt")
        for i in range(5):  # two cascades start: written at once
            await service.queue.put(member(t + i * 1_000))
            await service.queue.put(member(t + i * 1_000, symbol="ETHUSDT"))
        await wait_until(lambda: live_by_symbol(sync_redis, redis_prefix) == {btc: 5, eth: 5}, within=10, what="starts")
        await service.queue.put(member(t + 5_000))  # BTC's totals begin to wait
        routed = service.pipeline.routed_events
        await wait_until(lambda: service.pipeline.routed_events > routed, within=10, what="BTC member routed")
        btc_waits = time.monotonic()
        await asyncio.sleep(FLUSH_S / 2)
        await service.queue.put(member(t + 5_000, symbol="ETHUSDT"))  # ETH's begin to wait, later
        await wait_until(
            lambda: live_by_symbol(sync_redis, redis_prefix) == {btc: 6, eth: 5}, within=FLUSH_S + 5, what="BTC due"
        )
        assert time.monotonic() - btc_waits >= FLUSH_S - 0.2
        # ETH is not due yet: written on its own, FLUSH_S after it began to wait
        assert time.monotonic() - btc_waits < FLUSH_S * 1.5 - 1  # else the line below proves nothing
        assert live_by_symbol(sync_redis, redis_prefix) == {btc: 6, eth: 5}
        await wait_until(
            lambda: live_by_symbol(sync_redis, redis_prefix) == {btc: 6, eth: 6}, within=FLUSH_S, what="ETH due"
        )
        assert time.monotonic() - btc_waits >= FLUSH_S * 1.5 - 0.2
        entries = [(e["symbol"], e["events"]) for e in stream_entries(sync_redis, redis_prefix)]
        assert entries[-2:] == [(btc, 6), (eth, 6)]
