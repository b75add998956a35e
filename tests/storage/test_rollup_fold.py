"""The fold of closed hours (db/migrations/0018, db/rollups.py `FOLD`, collector/storage/maintenance.py).

The writer upserts the hour, day and market-hour rollups only for rows before the fold's line;
later hours reach them when they are folded from the minutes. Readers see every tier through the
`_all` views. These tests try to make a row count twice or not at all: rows on both sides of the
line, late rows after a fold, a fold racing a busy writer, two collectors folding at once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from collector.storage.maintenance import (
    FOLD_IDLE_S,
    FoldState,
    fold_closed_hours,
    fold_options,
    run_maintenance,
)
from collector.storage.spool import Batch
from collector.storage.timescale import TimescaleWriter
from common.config import Settings
from common.events import Liquidation, Side
from db import rollups
from tests import services
from tests.e2e.tcp_proxy import TcpProxy
from tests.storage.factories import T0, liq
from tests.storage.helpers import ROLLUPS_EQUAL_RAW, tier_equals_raw

HOUR = 3_600_000
H0 = T0 // HOUR * HOUR  # the hour of the fixed test time

# The folded tables alone (no views) against the raw rows before the line: what the fold and the
# writer's own upserts put there, with no help from the minutes (the line's day: its row holds the
# hours before the line only).
BEFORE_LINE = "WHERE time < (SELECT folded_through FROM rollup_fold)"
FOLDED_TABLES = [("liquidations_1h", "1 hour"), ("liquidations_1d", "1 day"), ("liquidations_market_1h", "1 hour")]


def _scalar(url: str, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def _set_line(url: str, ms: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE rollup_fold SET folded_through = %s", (_ts(ms),))


def _line(url: str) -> int:
    line = _scalar(url, "SELECT folded_through FROM rollup_fold")
    assert isinstance(line, datetime)
    return int(line.timestamp() * 1000)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _assert_exact(url: str) -> None:
    assert _scalar(url, ROLLUPS_EQUAL_RAW) is True, "a rollup read through its view differs from the raw rows"
    for table, width in FOLDED_TABLES:
        query = "SELECT " + tier_equals_raw(table, width, BEFORE_LINE)
        assert _scalar(url, query) is True, f"{table} differs from the raw rows before the line"


def _events(start_ms: int, n: int, step_ms: int, offset: int = 0) -> list[Liquidation]:
    """n distinct liquidations from `start_ms`, `step_ms` apart, on two venues, three coins, both sides."""
    return [
        liq(
            ("bybit", "binance")[i % 2],
            start_ms + i * step_ms,
            (Side.LONG, Side.SHORT)[i % 3 == 0],
            qty=f"0.{i % 9 + 1}",
            price=str(1_000 + (i + offset) % 997),
            symbol=("BTCUSDT", "ETHUSDT", "SOLUSDT")[i % 3],
        )
        for i in range(n)
    ]


async def test_hours_after_the_line_reach_the_hours_and_days_only_by_the_fold(
    writer: TimescaleWriter, clean_db: str
) -> None:
    line = H0 + HOUR
    _set_line(clean_db, line)
    events = _events(H0 + 17_000, 600, 29_000)  # nearly five hours: one before the line, four after
    assert (await writer.write(Batch(liquidations=events))).inserted == 600
    assert _scalar(clean_db, "SELECT count(*) FROM liquidations_1h WHERE bucket >= %s", (_ts(line),)) == 0
    assert _scalar(clean_db, "SELECT sum(events) FROM liquidations_1d") == sum(e.time_ms < line for e in events)
    _assert_exact(clean_db)

    # Three hours have closed for the fold's delay at `now`: each is folded once, oldest first.
    now_s = (H0 + 4 * HOUR + 120_000) / 1000
    assert await fold_closed_hours(clean_db, now=now_s, delay_s=120) == 3
    assert _line(clean_db) == H0 + 4 * HOUR
    _assert_exact(clean_db)
    assert await fold_closed_hours(clean_db, now=now_s, delay_s=120) == 0  # nothing new has closed
    assert _scalar(clean_db, "SELECT sum(events) FROM liquidations_1h") == sum(
        e.time_ms < H0 + 4 * HOUR for e in events
    )

    # A venue minutes behind: rows of folded hours arrive now, and go to every tier at once.
    late = _events(H0 + 2 * HOUR + 5_000, 90, 31_000, offset=7)
    assert (await writer.write(Batch(liquidations=late))).inserted == 90
    _assert_exact(clean_db)
    assert _scalar(clean_db, "SELECT sum(events) FROM liquidations_1h_all") == 690
    # The rest of the day, folded: the day's row holds every hour before the line.
    assert await fold_closed_hours(clean_db, now=(H0 + 9 * HOUR) / 1000, delay_s=0) == 5
    _assert_exact(clean_db)
    assert _scalar(clean_db, "SELECT sum(events) FROM liquidations_1d") == 690


async def test_a_fold_racing_a_busy_writer_counts_every_row_once(writer: TimescaleWriter, clean_db: str) -> None:
    # The writer keeps writing rows of the very hour being folded while the fold runs: a batch
    # that read the old line must commit before the fold reads the minutes, or after it moves the
    # line, never in between (else its rows would be in no hour at all).
    line = H0
    _set_line(clean_db, line)
    done = asyncio.Event()
    written = 0

    async def write() -> None:
        nonlocal written
        for k in itertools.count():
            if done.is_set():
                return
            hour = line + (k % 4) * HOUR  # the hours being folded and the next ones
            batch = _events(hour + (k * 7_919) % HOUR, 120, 1_003, offset=k)
            written += (await writer.write(Batch(liquidations=batch))).inserted

    task = asyncio.create_task(write())
    folded = 0
    for hour in range(1, 4):
        await asyncio.sleep(0.3)
        folded += await fold_closed_hours(clean_db, now=(line + hour * HOUR) / 1000, delay_s=0)
    await asyncio.sleep(0.3)
    done.set()
    await task
    assert folded == 3 and _line(clean_db) == line + 3 * HOUR
    assert written > 1_000 and _scalar(clean_db, "SELECT count(*) FROM liquidations") == written
    _assert_exact(clean_db)


async def test_two_collectors_folding_at_once_fold_each_hour_once(writer: TimescaleWriter, clean_db: str) -> None:
    _set_line(clean_db, H0)
    events = _events(H0 + 1_000, 800, 40_000)  # nine hours
    await writer.write(Batch(liquidations=events))
    now_s = (H0 + 9 * HOUR) / 1000
    counts = await asyncio.gather(*(fold_closed_hours(clean_db, now=now_s, delay_s=0) for _ in range(3)))
    assert sum(counts) == 9 and _line(clean_db) == H0 + 9 * HOUR
    _assert_exact(clean_db)
    assert _scalar(clean_db, "SELECT sum(events) FROM liquidations_1h") == 800


async def test_the_leading_collector_folds_closed_hours_and_a_follower_does_not(
    settings: Settings, clean_db: str, writer: TimescaleWriter
) -> None:
    now = int(datetime.now(tz=UTC).timestamp() * 1000)
    start = now // HOUR * HOUR - 5 * HOUR
    _set_line(clean_db, start)
    await writer.write(Batch(liquidations=_events(start + 3_000, 500, 30_000)))
    stop = asyncio.Event()
    follower_state, leader_state = FoldState(), FoldState()
    follower = asyncio.create_task(
        run_maintenance(settings, stop, is_leader=lambda: False, fold_check_s=0.05, fold=follower_state)
    )
    await asyncio.sleep(0.5)
    assert _line(clean_db) == start  # a follower never folds
    assert follower_state.behind_s(now / 1000) is None  # and has no figure for the metrics
    # Five hours behind, as the metrics would say before the leader's first round: the oldest
    # closed hour (`start`) was due 4 h and 2 min ago, give or take the part of this hour gone.
    assert FoldState(line=_ts(start)).behind_s(now / 1000) == pytest.approx((now - start) / 1000 - 3_600 - 120)
    leader = asyncio.create_task(
        run_maintenance(settings, stop, is_leader=lambda: True, fold_check_s=0.05, fold=leader_state)
    )
    # Every hour closed for the fold's delay (2 min) is folded; the open one, and one closed less
    # than 2 min ago, are not.
    expected = (now - 120_000) // HOUR * HOUR
    for _ in range(200):
        if _line(clean_db) == expected:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(follower, leader)
    later = (int(datetime.now(tz=UTC).timestamp() * 1000) - 120_000) // HOUR * HOUR  # an hour closing meanwhile
    assert _line(clean_db) in (expected, later) and expected >= start + 4 * HOUR
    assert leader_state.line == _ts(_line(clean_db)) and leader_state.behind_s(time.time()) == 0  # kept up
    _assert_exact(clean_db)


async def test_a_fold_gone_silent_mid_transaction_holds_the_writer_back_only_briefly(
    writer: TimescaleWriter, clean_db: str
) -> None:
    # A fold that moved the line and then fell silent (its host gone, its socket never closed)
    # holds the row every writer's transaction waits for. With the fold's connection options the
    # server ends that session after FOLD_IDLE_S; without them the writer would wait until its
    # statement timeout (30 s here) and spool the batch.
    _set_line(clean_db, H0)
    silent = psycopg.connect(clean_db, options=fold_options(clean_db, 30.0))
    try:
        silent.execute(rollups.FOLD_MOVE, {"hour": _ts(H0), "next": _ts(H0 + HOUR)})  # and then nothing
        start = time.monotonic()
        result = await writer.write(Batch(liquidations=_events(H0 + 1_000, 50, 1_000)))
        waited = time.monotonic() - start
    finally:
        silent.close()  # the server has ended its session by now: nothing to commit
    assert result.inserted == 50
    assert FOLD_IDLE_S - 1 < waited < FOLD_IDLE_S + 5, waited  # it did wait for the line, briefly
    assert _line(clean_db) == H0  # the silent fold was rolled back with its session
    _assert_exact(clean_db)


async def test_a_database_that_hangs_skips_fold_rounds_and_folding_resumes_when_it_answers(
    writer: TimescaleWriter, clean_db: str, redis_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = int(datetime.now(tz=UTC).timestamp() * 1000)
    start = now // HOUR * HOUR - 4 * HOUR
    _set_line(clean_db, start)
    await writer.write(Batch(liquidations=_events(start + 3_000, 300, 30_000)))
    target = urlsplit(clean_db)
    with TcpProxy((target.hostname or "127.0.0.1", target.port or 5432)) as proxy:
        proxy.set_mode("hang")  # accepts, never answers
        settings = services.make_settings(
            proxy.url_for(clean_db),
            redis_prefix,
            tmp_path,
            LIQ_DB_CONNECT_TIMEOUT_S="1",
            LIQ_DB_BATCH_TIMEOUT_S="2",
        )
        stop = asyncio.Event()
        task = asyncio.create_task(run_maintenance(settings, stop, fold_check_s=0.2))
        for _ in range(100):
            if "fold skipped this round" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "fold skipped this round" in caplog.text and not task.done()
        assert _line(clean_db) == start
        proxy.set_mode("pass")
        for _ in range(100):
            if _line(clean_db) > start + 2 * HOUR:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert _line(clean_db) > start + 2 * HOUR
    _assert_exact(clean_db)
