"""The rollup tiers give the raw rows' figures whichever a reader picks (app.data.rows.tiers_for).

- The whole market's hourly rollup (liquidations_market_1h) gives ALL the same figures as the
  per-symbol rollups: every ALL reader, against the same query over an explicit list of every
  contract (which reads the per-symbol tables), for random ranges, venues, sides and sources.
- The daily rollup (liquidations_1d) gives a coin's readers over whole UTC days the raw rows' sums.

Each runs twice: with every event before the fold's line (all tiers hold them), and with the line
in the middle of the events (db/migrations/0018: the hours and days hold only what lies before
it, and the readers take the rest from the minutes).
"""

from __future__ import annotations

import random
from decimal import Decimal

import pandas as pd
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from app.data import analyses, explorer, heatmap, history
from app.data.rows import (
    DAYS,
    HOURS,
    MARKET_HOURS,
    event_bounds,
    fold_line,
    hours_table,
    segments,
    tiers_for,
    to_ms,
    ts,
)
from app.query import COIN, Query, Target
from common.config import Settings
from common.events import Liquidation
from common.instruments import guess_instrument
from tests.app.seed import fq, insert_liquidations, liq

HOUR = 3_600_000
DAY = 86_400_000
BOTH = ("binance", "bybit")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "1000PEPEUSDT", "币安人生USDT")
BASE = 1_767_225_600_000 - 4 * DAY  # 20251229 00:00:00 UTC


def _events(n: int) -> list[Liquidation]:
    rng = random.Random(11)
    return [
        liq(
            rng.choice(BOTH),
            rng.choice(["LONG", "SHORT"]),
            f"{rng.randrange(1, 90_000) / 1_000:.3f}",
            f"{rng.randrange(100, 7_000_000) / 100:.2f}",
            BASE + rng.randrange(4 * DAY),
            symbol=rng.choice(SYMBOLS),
            source=rng.choice(["live", "live", "live", "replay"]),
        )
        for _ in range(n)
    ]


def _every_contract(q: Query) -> Query:
    """The same query over an explicit list of every contract: it reads the per-symbol rollups."""
    pairs = tuple((e, s) for e in BOTH for s in SYMBOLS)
    return q.with_changes(target=Target(COIN, "EVERY", "", pairs))


def _frame(df: pd.DataFrame, columns: list[str]) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in df[columns].itertuples(index=False)) if not df.empty else []


LINES = [None, BASE + 2 * DAY + 5 * HOUR]  # the session's line (after every event), one in the middle


def _set_line(settings: Settings, line: int | None) -> None:
    if line is not None:
        with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
            conn.execute("UPDATE rollup_fold SET folded_through = %s", (ts(line),))


@pytest.mark.parametrize("line", LINES)
def test_all_reads_the_market_rollup_and_agrees_with_every_contract(
    settings: Settings, pool: ConnectionPool, line: int | None
) -> None:
    _set_line(settings, line)
    events = _events(4_000)
    insert_liquidations(settings.database_url, events)
    with psycopg.connect(str(settings.database_url)) as conn:  # the writer's sums, here from seed's rebuild
        market = conn.execute("SELECT sum(events), sum(value_usd) FROM liquidations_market_1h_all").fetchone()
        if line is not None:  # the folded tables hold the rows before the line only
            folded = conn.execute("SELECT sum(events) FROM liquidations_market_1h").fetchone()
            assert folded == (sum(e.time_ms < line for e in events),)
    assert market == (len(events), sum((e.value_usd for e in events), Decimal(0)))
    rng = random.Random(5)
    for _ in range(12):
        start = BASE + rng.randrange(2 * DAY)
        end = start + rng.choice([HOUR + rng.randrange(HOUR), DAY + rng.randrange(DAY), 2 * DAY])
        q = fq(None, rng.choice([BOTH, ("bybit",)]), rng.choice([True, False]), rng.choice([None, "LONG", "SHORT"]))
        every = _every_contract(q)
        assert hours_table(q) == MARKET_HOURS and hours_table(every) == HOURS
        if end - start >= 2 * HOUR and line is None:  # a whole hour inside: read from the market rollup
            assert MARKET_HOURS in {t for t, _lo, _hi in segments(start, end, tiers_for(q), line_ms=fold_line(pool))}

        got, want = history.totals(pool, q, start, end), history.totals(pool, every, start, end)
        assert (got.total.events, got.total.usd, got.max_usd) == (want.total.events, want.total.usd, want.max_usd)
        assert {k: (a.events, a.usd) for k, a in got.by_side.items()} == {
            k: (a.events, a.usd) for k, a in want.by_side.items()
        }
        assert {k: (a.events, a.usd) for k, a in got.by_exchange.items()} == {
            k: (a.events, a.usd) for k, a in want.by_exchange.items()
        }
        assert history.largest(pool, q, start, end) == history.largest(pool, every, start, end)
        assert event_bounds(pool, q, start, end) == event_bounds(pool, every, start, end)
        for interval in (HOUR, 4 * HOUR, DAY):
            bars = history.liquidation_bars(pool, q, start, end, interval)
            assert bars.empty or bars["quantity"].isna().all()  # coins do not add up
            columns = ["bar", "side", "events", "value_usd"]
            assert _frame(bars, columns) == _frame(history.liquidation_bars(pool, every, start, end, interval), columns)
        threshold = Decimal(rng.choice([10_000, 100_000, 1_000_000]))
        columns = ["time", "exchange", "symbol", "side", "value_usd"]
        assert _frame(history.big_liquidations(pool, q, start, end, threshold, 20), columns) == _frame(
            history.big_liquidations(pool, every, start, end, threshold, 20), columns
        )
        columns = ["hour", "side", "events", "value_usd"]
        assert _frame(heatmap.hourly_by_side(pool, q, start, end), columns) == _frame(
            heatmap.hourly_by_side(pool, every, start, end), columns
        )
        for interval in ("1h", "1d", "15m"):
            columns = ["bucket", "exchange", "side", "events", "value_usd", "max_value_usd"]
            assert _frame(analyses.volume_series(pool, q, start, end, interval), columns) == _frame(
                analyses.volume_series(pool, every, start, end, interval), columns
            )
        columns = ["exchange", "hour", "events"]
        assert _frame(analyses.exchange_timing(pool, q, start, end), columns) == _frame(
            analyses.exchange_timing(pool, every, start, end), columns
        )
        assert explorer.explorer_count(pool, q, start, end) == explorer.explorer_count(pool, every, start, end)
        page = explorer.explorer_page(pool, q, start, end)
        assert _frame(page, ["time", "event_key"]) == _frame(
            explorer.explorer_page(pool, every, start, end), ["time", "event_key"]
        )


def _matching(events: list[Liquidation], q: Query, start: int, end: int) -> list[Liquidation]:
    return [
        e
        for e in events
        if start <= e.time_ms < end
        and e.exchange in q.venues
        and (q.symbols is None or e.symbol in q.symbols)
        and (q.include_nonlive or e.source == "live")
        and (q.side is None or e.side == q.side)
    ]


@pytest.mark.parametrize("line", LINES)
def test_coin_readers_over_whole_days_read_the_daily_rollup_and_equal_the_raw_rows(
    settings: Settings, pool: ConnectionPool, line: int | None
) -> None:
    _set_line(settings, line)
    events = _events(4_000)
    insert_liquidations(settings.database_url, events)
    rng = random.Random(8)
    for _ in range(10):
        start = BASE + rng.randrange(DAY)
        end = start + 2 * DAY + rng.randrange(DAY)  # at least one whole UTC day inside
        q = _every_contract(
            fq(None, rng.choice([BOTH, ("binance",)]), rng.choice([True, False]), rng.choice([None, "LONG"]))
        )
        if line is None:
            assert DAYS in {t for t, _lo, _hi in segments(start, end, tiers_for(q), line_ms=fold_line(pool))}
        want = _matching(events, q, start, end)

        got = history.totals(pool, q, start, end)
        assert (got.total.events, got.total.usd) == (len(want), sum((e.value_usd for e in want), Decimal(0)))
        base = sum((guess_instrument(e.exchange, e.symbol).canonical_quantity(e.quantity) for e in want), Decimal(0))
        assert got.total.quantity == base  # 1000PEPE counts 1000 PEPE each
        assert got.max_usd == max(e.value_usd for e in want)
        top = history.largest(pool, q, start, end)
        biggest = max(want, key=lambda e: (e.value_usd, -e.time_ms))
        assert top is not None and (top["value_usd"], top["time_ms"]) == (biggest.value_usd, biggest.time_ms)
        assert event_bounds(pool, q, start, end) == (min(e.time_ms for e in want), max(e.time_ms for e in want))
        assert explorer.explorer_count(pool, q, start, end) == (len(want), sum((e.value_usd for e in want), Decimal(0)))
        # The chart's markers: every liquidation of at least $20,000, found through the hours (and,
        # past the line, the minutes), the 20 largest of them at most.
        big = history.big_liquidations(pool, q, start, end, Decimal(20_000), 20)
        expected = sorted((e.value_usd for e in want if e.value_usd >= 20_000), reverse=True)[:20]
        assert sorted(big["value_usd"], reverse=True) == expected and expected

        daily: dict[tuple[int, str, str], list[Liquidation]] = {}
        for e in want:
            daily.setdefault((e.time_ms // DAY * DAY, e.exchange, e.side), []).append(e)
        series = analyses.volume_series(pool, q, start, end, "1d")
        assert sorted(
            (to_ms(b), x, s, int(n), u, m)
            for b, x, s, n, u, m in series[
                ["bucket", "exchange", "side", "events", "value_usd", "max_value_usd"]
            ].itertuples(index=False)
        ) == sorted(
            (day, x, s, len(v), sum((e.value_usd for e in v), Decimal(0)), max(e.value_usd for e in v))
            for (day, x, s), v in daily.items()
        )
        # Daily bars start at midnight at or before `start` (the chart's bars start at multiples of
        # the interval) and end exactly at `end`.
        bars = history.liquidation_bars(pool, q, start, end, DAY)
        per_day: dict[tuple[int, str], list[Liquidation]] = {}
        for e in _matching(events, q, start // DAY * DAY, end):
            per_day.setdefault((e.time_ms // DAY * DAY, e.side), []).append(e)
        assert sorted(
            (to_ms(b), s, int(n), u)
            for b, s, n, u in bars[["bar", "side", "events", "value_usd"]].itertuples(index=False)
        ) == sorted((day, s, len(v), sum((e.value_usd for e in v), Decimal(0))) for (day, s), v in per_day.items())
