import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from collector.storage.redis_live import fast_member
from common.events import Liquidation, Side
from common.live_view import WINDOW_MS, Keys, decode_cascade, encode_liquidation
from tests import services
from tests.e2e.own_servers import OwnRedis
from tests.storage.factories import liq, now_ms
from tests.storage.helpers import Totals, db_count, db_totals, redis_totals, running_service, wait_until


def _script(now: int) -> tuple[list[Liquidation], int]:
    """300 events over the last 70 minutes on both venues and sides, 40 re-deliveries, one burst."""
    events = [
        liq(
            ("bybit", "binance")[i % 2],
            now - 4_200_000 + i * 13_500,
            (Side.LONG, Side.SHORT)[i % 3 == 0],
            qty=f"0.0{i % 7 + 1}3",
            price=f"{60_000 + i}.5",
        )
        for i in range(300)
    ]
    burst = [liq("bybit", now - 30_000 + i * 10, Side.SHORT, qty="2", price="61000") for i in range(6)]
    unique = events + burst
    return unique + events[100:140], len(unique)


def _expected(events: list[Liquidation], lo: int, hi: int) -> Totals:
    totals: Totals = {}
    for e in {x.key: x for x in events}.values():
        if lo <= e.time_ms <= hi:
            n, usd = totals.get((e.exchange, str(e.side)), (0, Decimal(0)))
            totals[(e.exchange, str(e.side))] = (n + 1, usd + e.value_usd)
    return totals


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


async def test_window_totals_in_redis_equal_timescale(
    settings: object, sync_redis: redis.Redis, redis_prefix: str, clean_db: str
) -> None:
    now = now_ms()
    events, unique = _script(now)
    async with running_service(settings) as service:  # type: ignore[arg-type]
        for ev in events:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, what="all rows in TimescaleDB")
        keys = Keys(redis_prefix)
        await wait_until(
            lambda: (
                sync_redis.zcard(keys.liqs) >= 250
                and sync_redis.hexists(keys.collector, "state")
                and bool(sync_redis.exists(keys.built))
            ),
            what="redis",
        )
        lo, hi = now - WINDOW_MS, now
        from_redis = redis_totals(sync_redis, redis_prefix, lo, hi)
        assert from_redis == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        assert sum(n for n, _ in from_redis.values()) < unique  # the window really cut older events
        [raw] = sync_redis.hvals(keys.cascades)
        cascade = decode_cascade(raw)
        assert (cascade.count, cascade.side, cascade.value_usd) == (6, Side.SHORT, Decimal(732_000))
        state = json.loads(sync_redis.hget(keys.collector, "state") or "{}")
        assert state["spool"]["pending_events"] == 0 and abs(state["heartbeat_ms"] - now_ms()) < 10_000


async def test_flushed_redis_is_rebuilt_from_timescale(
    own_redis: OwnRedis, redis_prefix: str, clean_db: str, tmp_path: Path
) -> None:
    settings = services.make_settings(clean_db, redis_prefix, tmp_path, REDIS_URL=own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    now = now_ms()
    events, unique = _script(now)
    lo, hi = now - WINDOW_MS, now
    keys = Keys(redis_prefix)
    async with running_service(settings) as service:
        for ev in events:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, what="rows")
        await wait_until(lambda: redis_totals(client, redis_prefix, lo, hi) == _expected(events, lo, hi), what="window")
        client.flushall()
        await wait_until(lambda: bool(client.exists(keys.built)), what="rebuild marker")
        assert redis_totals(client, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        assert client.hlen(keys.cascades) == 1
    client.close()


async def test_redis_down_then_back_keeps_timescale_and_rebuilds(
    own_redis: OwnRedis, redis_prefix: str, clean_db: str, tmp_path: Path
) -> None:
    settings = services.make_settings(clean_db, redis_prefix, tmp_path, REDIS_URL=own_redis.url)
    now = now_ms()
    events, unique = _script(now)
    lo, hi = now - WINDOW_MS, now
    async with running_service(settings) as service:
        for ev in events[:100]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == 100, what="first rows")
        own_redis.stop()
        for ev in events[100:]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, what="rows written while Redis is down")
        assert not service.live.available
        own_redis.start()  # comes back empty (no persistence)
        client = redis.Redis.from_url(own_redis.url)
        await wait_until(lambda: bool(client.exists(Keys(redis_prefix).built)), what="rebuild")
        assert redis_totals(client, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        client.close()


@given(
    exchange=st.sampled_from(["bybit", "binance", 'we"ird', "ünï"]),
    source=st.sampled_from(["live", "test", "a\\b"]),
    qty=st.decimals(min_value=Decimal("0.00000001"), max_value=10**6, places=8),
    price=st.decimals(min_value=Decimal("0.0001"), max_value=10**7, places=4),
    time_ms=st.integers(min_value=0, max_value=2**42),
    side=st.sampled_from(list(Side)),
)
def test_fast_member_equals_the_shared_codec(
    exchange: str, source: str, qty: Decimal, price: Decimal, time_ms: int, side: Side
) -> None:
    ev = liq(exchange, time_ms, side, qty=str(qty), price=str(price), source=source)
    assert fast_member(ev) == encode_liquidation(ev)


async def test_restart_after_a_kill_drops_members_that_never_reached_timescale(
    settings: object, sync_redis: redis.Redis, redis_prefix: str, clean_db: str
) -> None:
    keys = Keys(redis_prefix)
    now = now_ms()
    ghost = liq(time_ms=now - 5_000, qty="7")  # in Redis from a killed run, never committed
    sync_redis.zadd(keys.liqs, {encode_liquidation(ghost): ghost.time_ms})
    sync_redis.set(keys.built, "1")
    sync_redis.hset(keys.collector, "state", json.dumps({"stopped": False}))
    events = [liq(time_ms=now - 1_000 - i, qty="0.01") for i in range(50)]
    async with running_service(settings) as service:  # type: ignore[arg-type]
        for ev in events:
            await service.queue.put(ev)
        await wait_until(lambda: service.live.rebuilt_ms is not None and db_count(clean_db) == 50, what="rebuild")
        lo, hi = now - WINDOW_MS, now
        await wait_until(
            lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == _expected(events, lo, hi), what="window"
        )
        assert redis_totals(sync_redis, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi)
    assert json.loads(sync_redis.hget(keys.collector, "state") or "{}")["stopped"] is True


async def test_restart_after_a_clean_stop_keeps_the_view_without_rebuilding(
    settings: object, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    now = now_ms()
    async with running_service(settings) as service:  # type: ignore[arg-type]
        await service.queue.put(liq(time_ms=now - 1_000))
        await wait_until(
            lambda: service.live.rebuilt_ms is not None and sync_redis.zcard(keys.liqs) == 1, what="first run"
        )
    async with running_service(settings) as service:  # type: ignore[arg-type]
        await service.queue.put(liq(time_ms=now - 2_000))
        await wait_until(lambda: sync_redis.zcard(keys.liqs) == 2, what="second run")
        assert service.live.rebuilt_ms is None and not service.live.needs_rebuild


async def test_a_flush_during_a_rebuild_aborts_the_swap(redis_prefix: str, sync_redis: redis.Redis) -> None:
    """A rebuild must not stamp `built` on a window that a FLUSH emptied while it was assembled."""
    from collector.storage.redis_live import RedisLive

    live = RedisLive(services.service_env()["REDIS_URL"], redis_prefix)
    await live.open()
    keys = Keys(redis_prefix)
    try:
        events = [liq(time_ms=now_ms() - 1_000 * i) for i in range(3)]
        assert await live.begin_rebuild()
        for k in sync_redis.scan_iter(match=f"{redis_prefix}*"):  # FLUSH of this test's keys only
            sync_redis.delete(k)
        assert not await live.rebuild(events, list, list)
        assert not sync_redis.exists(keys.built) and live.needs_rebuild
        assert await live.begin_rebuild()
        assert await live.rebuild(events, list, list)
        assert sync_redis.exists(keys.built) and sync_redis.zcard(keys.liqs) == 3
    finally:
        await live.close()
