import asyncio
import gc
import json
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis

from collector.pipeline import CANDLE_FLUSH_S
from collector.service import YOUNG_GC_THRESHOLD, CollectorService
from collector.storage.spool import decode_batch
from common.config import Settings
from common.events import Event
from common.live_view import WINDOW_MS
from tests.storage.factories import candle, liq, now_ms, status
from tests.storage.helpers import (
    ROLLUPS_EQUAL_RAW,
    db_count,
    db_totals,
    published_state,
    redis_totals,
    running_service,
    wait_until,
)
from tests.storage.test_isolation import long_symbol


async def test_invalid_amounts_are_dropped_alone_and_the_rest_flows(settings: Settings, clean_db: str) -> None:
    now = now_ms()
    bad = liq(time_ms=now - 10)
    bad.value_usd = Decimal(0)
    events: list[Event] = [liq(time_ms=now - 30), bad, liq(time_ms=now - 20), candle(open_ms=now - now % 60_000)]
    async with running_service(settings) as service:
        for ev in [*events, status("connected")]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == 2, what="valid rows")
        assert service.pipeline.state()["invalid_events"] == 1
        await wait_until(lambda: service.pipeline.state()["inbox"] == 0, what="inbox drained")
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM candles").fetchone() == (1,)
        # no adapter sent "disconnected": the row stays open until the next start closes it
        assert conn.execute("SELECT count(*) FROM stream_coverage WHERE disconnected_at IS NULL").fetchone() == (1,)


async def test_a_refused_status_is_quarantined_and_the_flow_continues(
    settings: Settings, clean_db: str, tmp_path: Path
) -> None:
    now = now_ms()
    async with running_service(settings) as service:
        await service.queue.put(liq(time_ms=now - 5))
        await wait_until(lambda: db_count(clean_db) == 1, what="first row")
        weird = status("connected", connection_id="c" * 10)
        weird.symbols = ("\x00",)  # PostgreSQL text cannot hold NUL: the database refuses that row
        await service.queue.put(weird)
        await service.queue.put(liq(time_ms=now - 1))
        await wait_until(lambda: service.pipeline.state()["quarantined_rows"] == 1, what="quarantine")
        await wait_until(lambda: db_count(clean_db) == 2, what="flow continues")
        state = service.pipeline.state()
        assert state["database"] == "ok" and state["spool"]["pending_events"] == 0
        assert "NUL" in state["last_quarantine_reason"]
    [line] = (settings.spool_dir / "quarantine.ndjson").read_text().splitlines()
    row = json.loads(line)
    assert row["kind"] == "statuses" and row["batch"]["s"][0][4] == ["\x00"]
    assert not (settings.spool_dir / "rejected.ndjson").exists()


@pytest.mark.parametrize("bad_symbol", ["BTC\x00USDT", long_symbol()], ids=["nul", "2800-letters"])
async def test_one_bad_row_among_20100_costs_only_itself(
    settings: Settings, clean_db: str, sync_redis: redis.Redis, redis_prefix: str, bad_symbol: str
) -> None:
    now = now_ms()
    good = [
        liq(("bybit", "binance")[i % 3 == 0], now - 1_800_000 + i * 50, qty=f"0.0{i % 9 + 1}") for i in range(20_100)
    ]
    bad = liq("binance", now - 900_000, symbol=bad_symbol)
    async with running_service(settings) as service:
        run = asyncio.current_task()
        for ev in [*good[:9_000], bad, *good[9_000:]]:
            await service.queue.put(ev)
        await wait_until(lambda: service.pipeline.state()["quarantined_rows"] == 1, what="the bad row set aside")
        await wait_until(lambda: db_count(clean_db) == 20_100, what="every good row")
        lo, hi = now - WINDOW_MS, now_ms()
        expected = db_totals(clean_db, lo, hi)
        # the live view showed the bad row too: it is rebuilt from TimescaleDB
        await wait_until(lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == expected, what="redis == db")
        await wait_until(
            lambda: published_state(sync_redis, redis_prefix).get("quarantined_rows") == 1, what="state published"
        )
        published = published_state(sync_redis, redis_prefix)
        assert published["quarantine_file"] == str(settings.spool_dir / "quarantine.ndjson")
        assert published["database"] == "ok" and published["backpressure"] is False
        assert run is not None and not run.done()
    assert sum(n for n, _ in expected.values()) == 20_100
    with psycopg.connect(clean_db) as conn:
        assert conn.execute(ROLLUPS_EQUAL_RAW).fetchone() == (True,)
        assert conn.execute("SELECT count(DISTINCT event_key) FROM liquidations").fetchone() == (20_100,)
    [line] = (settings.spool_dir / "quarantine.ndjson").read_text().splitlines()
    row = json.loads(line)
    assert decode_batch(json.dumps(row["batch"])).liquidations == [bad]
    assert row["kind"] == "liquidations" and row["reason"]
    assert row["sqlstate"] == (None if "\x00" in bad_symbol else "54000")


async def test_steps_that_only_move_open_candles_cost_the_database_nothing(settings: Settings, clean_db: str) -> None:
    """Between bursts most router steps only replace an open minute's candle, which is written every
    CANDLE_FLUSH_S: such a step must not cost the writer a transaction (it did, a few hundred a
    second with the whole market's kline streams)."""
    minute = now_ms() - now_ms() % 60_000

    def stored_close() -> Decimal | None:
        with psycopg.connect(clean_db) as conn:
            row = conn.execute("SELECT close FROM candles WHERE time = to_timestamp(%s / 1000.0)", (minute,))
            found = row.fetchone()
        return None if found is None else Decimal(found[0])

    async with running_service(settings) as service:
        # A row is visible from the server's commit, a moment before the writer counts its batch.
        def flushed_at(close: int, batches: int) -> bool:
            return stored_close() == Decimal(close) and service.db.batches >= batches

        await service.queue.put(candle(open_ms=minute, close="50000"))
        await wait_until(lambda: flushed_at(50000, 1), what="the first flush", within=CANDLE_FLUSH_S + 10)
        flushed, before = time.monotonic(), service.db.batches  # the next flush is CANDLE_FLUSH_S away
        for i in range(1, 41):
            await service.queue.put(candle(open_ms=minute, close=str(50000 + i)))
            await asyncio.sleep(0.02)  # one router step each
        await wait_until(lambda: service.pipeline.routed_events >= 41, what="every candle routed")
        assert time.monotonic() - flushed < CANDLE_FLUSH_S - 1  # none of these steps was a flush
        assert service.db.batches == before
        await wait_until(lambda: flushed_at(50040, before + 1), what="the next flush", within=CANDLE_FLUSH_S + 10)
        assert service.db.batches == before + 1


async def test_the_running_collector_collects_young_garbage_less_often(settings: Settings) -> None:
    """At 20,000 liquidations a second Python's default (a young collection every 700 new objects)
    cost ~8 % of the collector's CPU: the service raises it while it runs, and puts it back after."""
    before = gc.get_threshold()
    async with running_service(settings):
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:]) != before
    assert gc.get_threshold() == before


async def test_an_idle_router_stops_as_soon_as_it_is_told(settings: Settings) -> None:
    """The router waits up to a second at a time for events; `stop` must end that wait at once, for
    the shutdown's budget is shared by every step after it."""
    pipeline = CollectorService(settings).pipeline  # nothing opened: an empty router needs nothing
    stop = asyncio.Event()
    router = asyncio.create_task(pipeline.run_router(stop))
    await asyncio.sleep(0.3)  # the router waits for events
    told = time.monotonic()
    stop.set()
    await asyncio.wait_for(router, timeout=5)
    assert time.monotonic() - told < 0.2


async def test_the_collector_says_how_far_behind_it_is_while_it_works_off_a_backlog(
    settings: Settings, clean_db: str
) -> None:
    """A backlog read 3 s ago (the adapters were held back, as in a burst faster than the router):
    while the router works it off, the published state says how long the oldest event not yet in
    the live view has waited (the live page warns from BEHIND_WARN_S), and 0 once it is all in."""
    now, n = now_ms(), 40_000
    read_at = now - 3_000
    async with running_service(settings) as service:
        assert service.pipeline.state()["behind_s"] == 0
        for i in range(n):
            service.queue.put_nowait(liq(time_ms=now - 60_000 + i, received_ms=read_at))
        seen: list[float] = []
        while service.pipeline.state()["queue"]:
            seen.append(service.pipeline.state()["behind_s"])
            await asyncio.sleep(0.02)
        waited = (now_ms() - read_at) / 1000
        assert seen and 3.0 <= max(seen) <= waited + 0.1, (seen, waited)
        await wait_until(lambda: service.pipeline.state()["behind_s"] == 0, what="the last step in the live view")
        await wait_until(lambda: db_count(clean_db) == n, what="every row")
        assert service.pipeline.state()["behind_s"] == 0
