"""Accumulated page and the history totals behind it (rollups + raw edges == raw rows, exactly)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from app.data.connections import open_pool
from app.data.history import coverage, largest, totals
from app.data.rows import event_bounds, segments
from app.format import fmt_count, fmt_datetime, fmt_duration, fmt_pct, fmt_qty, fmt_usd
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    Coverage,
    all_text,
    app_env,
    cascade_of,
    expected_totals,
    fq,
    insert_cascades,
    insert_coverage,
    insert_liquidations,
    liq,
    metric,
    no_exceptions,
    now_ms,
    open_app,
)

HOUR = 3_600_000
BOTH = ("binance", "bybit")


@pytest.fixture
def reader_pool(settings: Settings) -> Iterator[ConnectionPool]:
    pool = open_pool(str(settings.app_database_url))
    yield pool
    pool.close()


def test_segments_cover_the_range_without_overlap() -> None:
    rng = random.Random(7)
    for _ in range(500):
        start = rng.randrange(0, 10 * 86_400_000)
        end = start + rng.choice([0, 1, 59_999, 60_000, 3_599_999, HOUR + 1, 5 * 86_400_000 + rng.randrange(HOUR)])
        segs = segments(start, end, line_ms=10**14)  # every hour folded
        pos = start
        for table, lo, hi in segs:
            assert lo == pos and hi > lo
            width = {"liquidations": 1, "liquidations_1m": 60_000, "liquidations_1h": HOUR}[table]
            assert lo % width == 0 or table == "liquidations"
            assert hi % width == 0 or table == "liquidations"
            pos = hi
        assert pos == end or (not segs and start == end)


def _random_events(seed: int, start: int, hours: int, n: int) -> list[Liquidation]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(
            liq(
                rng.choice(BOTH),
                rng.choice(["LONG", "SHORT"]),
                f"{rng.randrange(1, 50_000) / 10_000:.4f}",
                f"{rng.randrange(5_000_000, 7_000_000) / 100:.2f}",
                start + rng.randrange(hours * HOUR),
                symbol=rng.choice(["BTCUSDT", "BTCUSDT", "ETHUSDT"]),
                source=rng.choice(["live", "live", "live", "test"]),
            )
        )
    return out


def test_totals_equal_raw_rows_for_any_range(settings: Settings, reader_pool: ConnectionPool) -> None:
    base = 1_767_225_600_000 - 3 * 86_400_000
    events = _random_events(1, base, 72, 3000)
    insert_liquidations(settings.database_url, events)
    rng = random.Random(2)
    with psycopg.connect(str(settings.database_url)) as conn:
        for _ in range(25):
            start = base + rng.randrange(72 * HOUR)
            end = start + rng.randrange(1, 72 * HOUR)
            f = fq(rng.choice(["BTCUSDT", None]), rng.choice([BOTH, ("bybit",)]), rng.choice([True, False]))
            got = totals(reader_pool, f, start, end)
            want = [
                e
                for e in events
                if start <= e.time_ms < end
                and (f.symbols is None or e.symbol in f.symbols)
                and e.exchange in f.venues
                and (f.include_nonlive or e.source == "live")
            ]
            exp = expected_totals(want)
            # ALL has no base quantity (coins do not add up; the market rollup keeps none).
            quantity = Decimal(0) if f.symbols is None else exp.quantity
            assert (got.total.events, got.total.quantity, got.total.usd) == (exp.count, quantity, exp.usd)
            for exchange, agg in exp.by_exchange.items():
                assert (got.by_exchange[exchange].events, got.by_exchange[exchange].usd) == (agg.count, agg.usd)
            for side, agg in exp.by_side.items():
                assert (got.by_side[side].events, got.by_side[side].usd) == (agg.count, agg.usd)
            top = largest(reader_pool, f, start, end)
            if want:
                assert top is not None and top["value_usd"] == max(e.value_usd for e in want)
                assert got.max_usd == top["value_usd"]
            else:
                assert top is None
            first, last = event_bounds(reader_pool, f, start, end)
            assert (first, last) == (
                (min(e.time_ms for e in want), max(e.time_ms for e in want)) if want else (None, None)
            )
        # And the rollups themselves agree with the raw table (what the collector guarantees).
        raw = conn.execute("SELECT count(*), sum(value_usd) FROM liquidations").fetchone()
        assert raw == conn.execute("SELECT sum(events), sum(value_usd) FROM liquidations_1h_all").fetchone()
        assert raw == conn.execute("SELECT sum(events), sum(value_usd) FROM liquidations_market_1h_all").fetchone()
        assert raw == conn.execute("SELECT sum(events), sum(value_usd) FROM liquidations_1d_all").fetchone()


def test_coverage_percent_and_gaps(settings: Settings, reader_pool: ConnectionPool) -> None:
    t0 = 1_767_225_600_000
    insert_coverage(
        settings.database_url,
        [
            Coverage("binance", t0, t0 + 3 * HOUR, t0 + 3 * HOUR),
            Coverage("binance", t0 + 2 * HOUR, t0 + 5 * HOUR, None),  # overlaps; open: last_seen is its end
            Coverage("bybit", t0 + HOUR, t0 + 9 * HOUR, t0 + 9 * HOUR),
            Coverage("bybit", t0, t0 + 10 * HOUR, None, symbols=("ETHUSDT",)),  # other symbol
            Coverage("bybit", t0, t0 + 10 * HOUR, None, source="test"),  # not live
        ],
    )
    cov = coverage(reader_pool, fq("BTCUSDT", BOTH), t0, t0 + 10 * HOUR)
    assert cov.pct_by_exchange == {"binance": 50.0, "bybit": 80.0}
    assert sorted(cov.gaps) == [
        (t0, t0 + HOUR, "bybit"),
        (t0 + 5 * HOUR, t0 + 10 * HOUR, "binance"),
        (t0 + 9 * HOUR, t0 + 10 * HOUR, "bybit"),
    ]
    assert cov.merged_gaps() == [(t0, t0 + HOUR), (t0 + 5 * HOUR, t0 + 10 * HOUR)]
    with_test = coverage(reader_pool, fq("BTCUSDT", BOTH, live_only=False), t0, t0 + 10 * HOUR)
    assert with_test.pct_by_exchange["bybit"] == 100.0


def _seed_history(settings: Settings, now: int) -> tuple[list[Liquidation], list[Liquidation]]:
    live = [
        liq("bybit", "LONG", "0.5", "60000", now - 30 * HOUR),
        liq("bybit", "SHORT", "1.25", "61000.5", now - 20 * HOUR - 1234),
        liq("binance", "LONG", "0.014", "97210.1", now - 5 * HOUR),
        liq("binance", "SHORT", "2.5", "62000", now - 90_000),
    ]
    test_rows = [liq("bybit", "LONG", "100", "60000", now - 10 * HOUR, source="test")]
    insert_liquidations(settings.database_url, live + test_rows)
    insert_cascades(settings.database_url, [cascade_of(live[:1], 1), cascade_of(live[3:], 2), cascade_of(test_rows, 3)])
    insert_coverage(settings.database_url, [Coverage("binance", now - 40 * HOUR, now - 10 * HOUR, now - 10 * HOUR)])
    return live, test_rows


def test_accumulated_page_since_first_event(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    now = now_ms()
    live, _ = _seed_history(settings, now)
    app_env(monkeypatch, settings)
    at = open_app("accumulated")
    no_exceptions(at)
    want = expected_totals(live)
    assert metric(at, "First event (UTC)") == fmt_datetime(live[0].time_ms).removesuffix(" UTC")
    assert metric(at, "Last event (UTC)") == fmt_datetime(live[-1].time_ms).removesuffix(" UTC")
    assert metric(at, "Collection duration").startswith("1d 06:00:")  # first event .. now
    assert metric(at, "Liquidations") == "4"
    assert metric(at, "Base quantity") == fmt_qty(want.quantity)
    assert metric(at, "USD liquidated") == fmt_usd(want.usd)
    assert metric(at, "Cascades") == "2"  # the test-source cascade is hidden
    sides = at.dataframe[0].value
    assert list(sides["USD"]) == [fmt_usd(want.by_side["LONG"].usd), fmt_usd(want.by_side["SHORT"].usd)]
    exchanges = at.dataframe[1].value
    assert list(exchanges["Exchange"]) == ["binance (lower bound)", "bybit"]
    assert list(exchanges["Events"]) == [fmt_count(2), fmt_count(2)]
    text = all_text(at)
    assert f"**{fmt_usd(Decimal('155000'))}** — SHORT BTCUSDT on binance (lower bound)" in text
    # binance connected 30 h of the ~30 h since the first event; bybit never.
    assert "bybit connected 0.0% of the period" in text
    assert "binance connected 6" in text  # 30 h - 10 h open of the 30 h period: 66.x %
    hours = Decimal(30 * HOUR + (now_ms() - now)) / HOUR
    assert metric(at, "USD per hour")[:4] == fmt_usd(want.usd / hours)[:4]


def test_accumulated_range_and_nonlive_toggle(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    now = now_ms()
    live, test_rows = _seed_history(settings, now)
    app_env(monkeypatch, settings)
    at = open_app("accumulated", {"hours": "24"})
    no_exceptions(at)
    assert metric(at, "Liquidations") == "3"
    assert metric(at, "USD liquidated") == fmt_usd(expected_totals(live[1:]).usd)
    assert metric(at, "Collection duration") == fmt_duration(24 * 3600)

    at = open_app("accumulated", {"hours": "24", "nonlive": "1"})
    no_exceptions(at)
    assert metric(at, "USD liquidated") == fmt_usd(expected_totals(live[1:] + test_rows).usd)
    assert "TEST data — not live" in all_text(at)

    day = datetime.fromtimestamp(live[0].time_ms / 1000, tz=UTC).strftime("%Y%m%d")
    at = open_app("accumulated", {"since": day, "until": day})
    no_exceptions(at)
    same_day = [e for e in live if datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).strftime("%Y%m%d") == day]
    assert metric(at, "Liquidations") == fmt_count(len(same_day))


def test_empty_database_explains(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("accumulated")
    no_exceptions(at)
    assert "No liquidations stored yet" in all_text(at)
    assert not at.metric


def test_pct_format_of_coverage() -> None:
    assert fmt_pct(200 / 3) == "66.7%"
