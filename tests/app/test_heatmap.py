"""The heatmap page and its queries against the real seeded TimescaleDB."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from psycopg_pool import ConnectionPool

from app.data import heatmap
from app.format import fmt_count, fmt_usd
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    HISTORY_DAYS,
    HISTORY_RANGE,
    HISTORY_START_MS,
    all_text,
    app_env,
    fq,
    history_select,
    metric,
    no_exceptions,
    open_app,
    shown,
    sq,
)

END_MS = HISTORY_START_MS + HISTORY_DAYS * 86_400_000


def _by_day_hour(liqs: list[Liquidation]) -> dict[tuple[str, int], Decimal]:
    out: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for e in liqs:
        t = datetime.fromtimestamp(e.time_ms / 1000, tz=UTC)
        out[(t.strftime("%Y%m%d"), t.hour)] += e.value_usd
    return out


def test_matrix_equals_seeded_rows_for_an_unaligned_range(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    # Starts and ends mid-minute, so raw rows, minute and hour rollups are all used.
    start, end = HISTORY_START_MS + 3 * 86_400_000 + 1_234_567, END_MS - 7_654_321
    q = fq("BTCUSDT", ("binance", "bybit"))
    for side in (None, "LONG", "SHORT"):  # the query's side is applied in SQL
        hourly = heatmap.hourly_by_side(pool, replace(q, side=side), start, end)
        matrix = heatmap.heatmap_matrix(hourly, "value_usd", start, end)
        expected = _by_day_hour(history_select(seeded, start, end, side=side))
        got = {(day, hour): matrix.loc[day, hour] for day in matrix.index for hour in matrix.columns}
        assert {k: v for k, v in got.items() if v} == dict(expected)
    # Every day of the range is a row; hours outside the range are blank, quiet hours zero.
    assert list(matrix.index) == [f"202611{d:02d}" for d in range(4, 21)]
    assert matrix.loc["20261104", 0] is not None  # 00:20:34 .. 01:00 lies in the range
    assert matrix.loc["20261120", 21] is not None and matrix.loc["20261120", 22] is None
    assert matrix.loc["20261110", 5] == Decimal(0)  # no liquidation at 05h in the seeded pattern
    longs = heatmap.hourly_by_side(pool, replace(q, side="LONG"), start, end)
    counts = heatmap.heatmap_matrix(longs, "events", start, end)
    total = sum(v for row in counts.itertuples(index=False) for v in row if v is not None)
    assert total == len(history_select(seeded, start, end, side="LONG"))


def test_seasonality_is_the_mean_per_weekday_hour(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    hourly = heatmap.hourly_by_side(pool, *sq(HISTORY_START_MS, END_MS, None, ("bybit",), True))
    season = heatmap.seasonality_matrix(hourly, "events", HISTORY_START_MS, END_MS)
    chosen = history_select(seeded, symbol=None, exchanges=("bybit",), include_nonlive=True)
    # 20261101 is a Sunday; 20 days hold three of each weekday except Saturday (two).
    sundays_14h = [e for e in chosen if datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).weekday() == 6]
    sundays_14h = [e for e in sundays_14h if datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).hour == 14]
    assert sundays_14h
    assert season.loc["Sun", 14] == pytest.approx(len(sundays_14h) / 3)
    saturdays_14h = [
        e
        for e in chosen
        if datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).weekday() == 5
        and datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).hour == 14
    ]
    assert saturdays_14h
    assert season.loc["Sat", 14] == pytest.approx(len(saturdays_14h) / 2)


def test_sample_warning_for_short_or_quiet_ranges(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    whole = sq(HISTORY_START_MS, END_MS, None, ("binance", "bybit"))
    assert heatmap.sample_warning(heatmap.hourly_by_side(pool, *whole), *whole[1:]) is None
    short = sq(HISTORY_START_MS, HISTORY_START_MS + 3 * 86_400_000, None, ("binance", "bybit"))
    text = heatmap.sample_warning(heatmap.hourly_by_side(pool, *short), *short[1:])
    assert text is not None and "3.0 days" in text and "fewer than 14" in text


def test_page_shows_seeded_totals(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("heatmap", {**HISTORY_RANGE, "hm_side": "LONG"})  # an old link: its side still applies
    no_exceptions(at)
    longs = history_select(seeded, side="LONG")
    assert metric(at, "Liquidated USD in range") == fmt_usd(sum(e.value_usd for e in longs))
    assert metric(at, "Liquidations in range") == fmt_count(len(longs))
    assert len(at.get("plotly_chart")) == 2
    assert "Small sample" not in all_text(at)

    assert at.query_params["side"] == "LONG" and "hm_side" not in at.query_params
    assert [r.key for r in at.radio] == ["hm_metric"]  # no side selector of its own: the sidebar's applies
    at.selectbox(key="f_side").set_value("ALL").run()
    no_exceptions(at)
    both = history_select(seeded)
    assert metric(at, "Liquidated USD in range") == fmt_usd(sum(e.value_usd for e in both))


def test_page_refuses_hostile_params_and_explains_empty(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("heatmap", {"side": "'; DROP TABLE liquidations; --", "hm_metric": "9" * 40})
    no_exceptions(at)
    warnings = shown(" ".join(str(w.value) for w in at.warning))
    assert "side=" in warnings and "hm_metric" in warnings
    assert metric(at, "Liquidated USD in range") == fmt_usd(0)
    assert "No liquidations in this range" in all_text(at)
