"""The analyses page and its queries against the real seeded TimescaleDB."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from psycopg_pool import ConnectionPool

from app.data import analyses
from app.format import fmt_count, fmt_usd
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    HISTORY_DAYS,
    HISTORY_RANGE,
    HISTORY_START_MS,
    all_text,
    app_env,
    history_select,
    metric,
    no_exceptions,
    open_app,
    sq,
)

END_MS = HISTORY_START_MS + HISTORY_DAYS * 86_400_000


def _day(e: Liquidation) -> str:
    return datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).strftime("%Y%m%d")


@pytest.mark.parametrize("interval", ["1m", "15m", "1h", "4h", "1d"])
def test_volume_series_equals_raw_rows_for_any_interval(
    seeded: list[Liquidation], pool: ConnectionPool, interval: str
) -> None:
    start, end = HISTORY_START_MS + 86_400_000 + 59_999, END_MS - 3_600_001  # not aligned to anything
    scope = sq(start, end, None, ("binance", "bybit"), True)
    series = analyses.volume_series(pool, *scope, interval)
    chosen = history_select(seeded, start, end, symbol=None, include_nonlive=True)
    step = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}[interval]
    expected: dict[tuple[int, str, str], Decimal] = defaultdict(Decimal)
    for e in chosen:
        expected[(e.time_ms - e.time_ms % step, e.exchange, str(e.side))] += e.value_usd
    got = {(int(r.bucket.timestamp() * 1000), r.exchange, r.side): r.value_usd for r in series.itertuples(index=False)}
    assert got == dict(expected)
    assert int(series["events"].sum()) == len(chosen)


def test_daily_summary(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    scope = sq(HISTORY_START_MS, END_MS, "BTCUSDT", ("binance", "bybit"), False)
    daily = analyses.daily_summary(analyses.volume_series(pool, *scope, "1d")).set_index("day")
    chosen = history_select(seeded)
    assert list(daily.index) == sorted({_day(e) for e in chosen})
    for day in ("20261101", "20261106", "20261120"):
        rows = [e for e in chosen if _day(e) == day]
        longs = sum((e.value_usd for e in rows if e.side == "LONG"), Decimal(0))
        total = sum((e.value_usd for e in rows), Decimal(0))
        assert daily.loc[day, "value_usd"] == total
        assert daily.loc[day, "events"] == len(rows)
        assert daily.loc[day, "long_usd"] == longs
        assert daily.loc[day, "long_share_pct"] == longs / total * 100
        assert daily.loc[day, "largest_usd"] == max(e.value_usd for e in rows)


def test_price_levels_and_exchange_comparison(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    scope = sq(HISTORY_START_MS, END_MS, "BTCUSDT", ("binance", "bybit"), False)
    chosen = history_select(seeded)
    levels = analyses.price_levels(pool, *scope, 40)
    assert sum(levels["value_usd"], Decimal(0)) == sum(e.value_usd for e in chosen)
    assert int(levels["events"].sum()) == len(chosen)
    assert levels["price_level"].nunique() <= 40
    assert min(levels["price_level"]) >= min(e.price for e in chosen) - 1
    for side in ("LONG", "SHORT"):
        assert sum(levels.loc[levels["side"] == side, "value_usd"], Decimal(0)) == sum(
            e.value_usd for e in chosen if e.side == side
        )

    summary = analyses.exchange_summary(analyses.volume_series(pool, *scope, "4h")).set_index("exchange")
    timing = analyses.exchange_timing(pool, *scope)
    for exchange in ("binance", "bybit"):
        rows = [e for e in chosen if e.exchange == exchange]
        total = sum((e.value_usd for e in rows), Decimal(0))
        assert summary.loc[exchange, "value_usd"] == total
        assert summary.loc[exchange, "events"] == len(rows)
        assert summary.loc[exchange, "largest_usd"] == max(e.value_usd for e in rows)
        assert summary.loc[exchange, "avg_usd"] == total / len(rows)
        part = timing[timing["exchange"] == exchange]
        assert part["share_pct"].sum() == pytest.approx(100)
        assert int(part["events"].sum()) == len(rows)


def test_empty_range_gives_empty_frames(pool: ConnectionPool, clean_db: str) -> None:
    scope = sq(HISTORY_START_MS, HISTORY_START_MS, None, ("binance", "bybit"), False)
    assert analyses.volume_series(pool, *scope, "1h").empty
    assert analyses.daily_summary(analyses.volume_series(pool, *scope, "1d")).empty
    assert analyses.exchange_summary(analyses.volume_series(pool, *scope, "1h")).empty
    with pytest.raises(ValueError, match="unknown interval"):
        analyses.volume_series(pool, *scope, "7m")


def test_page_shows_seeded_totals(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("analyses", {**HISTORY_RANGE, "symbol": "ALL", "interval": "1h"})
    no_exceptions(at)
    chosen = history_select(seeded, symbol=None)
    assert metric(at, "Liquidated USD") == fmt_usd(sum(e.value_usd for e in chosen))
    assert metric(at, "Liquidations") == fmt_count(len(chosen))
    assert metric(at, "LONG USD") == fmt_usd(sum(e.value_usd for e in chosen if e.side == "LONG"))
    assert metric(at, "SHORT USD") == fmt_usd(sum(e.value_usd for e in chosen if e.side == "SHORT"))
    assert len(at.get("plotly_chart")) == 6  # no price levels across different coins
    assert "Price levels need a coin or a contract" in all_text(at)
    daily = at.dataframe[1].value
    assert list(daily["day"]) == sorted({_day(e) for e in chosen})
    assert "connected 0.0% of the period" in all_text(at)  # no stream_coverage rows were seeded

    # Non-live rows join in only with the toggle; the frame then says so.
    at = open_app("analyses", {**HISTORY_RANGE, "symbol": "ALL", "interval": "1h", "nonlive": "1"})
    no_exceptions(at)
    everything = history_select(seeded, symbol=None, include_nonlive=True)
    assert len(everything) > len(chosen)
    assert metric(at, "Liquidations") == fmt_count(len(everything))
    assert "not live" in all_text(at), [w.value for w in at.warning]


def test_page_for_one_symbol_draws_price_levels(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("analyses", {**HISTORY_RANGE, "symbol": "ETHUSDT"})
    no_exceptions(at)
    chosen = history_select(seeded, symbol="ETHUSDT")
    assert metric(at, "Liquidated USD") == fmt_usd(sum(e.value_usd for e in chosen))
    assert len(at.get("plotly_chart")) == 7


def test_page_empty_state(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("analyses", HISTORY_RANGE)
    no_exceptions(at)
    assert metric(at, "Liquidated USD") == fmt_usd(0)
    assert "No liquidations in this range" in all_text(at)
