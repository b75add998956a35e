"""Chart page: candle aggregation, liquidation bars, gaps, markers and the figure itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from psycopg_pool import ConnectionPool
from streamlit.testing.v1 import AppTest

from app.charts import chart_html, liquidation_chart
from app.data.connections import open_pool
from app.data.history import Filters, big_liquidations, candles, clear_candle_memo, coverage, liquidation_bars
from app.format import LONG_COLOR, SHORT_COLOR
from common.config import Settings
from tests.app.seed import (
    Coverage,
    all_text,
    app_env,
    insert_candles,
    insert_coverage,
    insert_liquidations,
    liq,
    make_candles,
    no_exceptions,
    now_ms,
    open_app,
)

HOUR = 3_600_000
T0 = 1_767_225_600_000  # 20260101 00:00:00 UTC
BOTH = ("binance", "bybit")


@pytest.fixture
def reader_pool(settings: Settings) -> Iterator[ConnectionPool]:
    pool = open_pool(str(settings.app_database_url))
    yield pool
    pool.close()


EVENTS = [
    liq("bybit", "LONG", "0.5", "60000", T0 + 10_000),  # bar 00:00 (5m)
    liq("binance", "LONG", "0.25", "60100", T0 + 299_999),  # bar 00:00
    liq("bybit", "SHORT", "2", "60200", T0 + 300_000),  # bar 00:05
    liq("bybit", "SHORT", "3", "61000", T0 + 2 * HOUR + 5),  # bar 02:00, big: 183,000 USD
    liq("bybit", "SHORT", "1", "61000", T0 + 2 * HOUR + 6, symbol="ETHUSDT"),
]


def test_liquidation_bars_per_interval(settings: Settings, reader_pool: ConnectionPool) -> None:
    insert_liquidations(settings.database_url, EVENTS)
    f = Filters("BTCUSDT", BOTH)
    bars = liquidation_bars(reader_pool, f, T0, T0 + 3 * HOUR, 300_000)
    got = [
        (int(b.timestamp() * 1000), s, int(n), u)
        for b, s, n, u in bars[["bar", "side", "events", "value_usd"]].itertuples(index=False)
    ]
    assert got == [
        (T0, "LONG", 2, Decimal("30000.0") + Decimal("15025.00")),
        (T0 + 300_000, "SHORT", 1, Decimal("120400")),
        (T0 + 2 * HOUR, "SHORT", 1, Decimal("183000")),
    ]
    daily = liquidation_bars(reader_pool, Filters(None, BOTH), T0, T0 + 3 * HOUR, 86_400_000)
    assert {s: u for s, u in zip(daily["side"], daily["value_usd"], strict=True)} == {
        "LONG": Decimal("45025.00"),
        "SHORT": Decimal("120400") + Decimal("183000") + Decimal("61000"),
    }


def test_candles_aggregate_to_the_bar(settings: Settings, reader_pool: ConnectionPool) -> None:
    clear_candle_memo()
    minutes = make_candles("binance", "BTCUSDT", T0, 60, price="60000", step="10", volume="1.5")
    insert_candles(settings.database_url, minutes + make_candles("bybit", "BTCUSDT", T0, 60, price="1"))
    df = candles(reader_pool, "binance", "BTCUSDT", T0, T0 + HOUR, 900_000, live_only=True)
    assert len(df) == 4
    first = df.iloc[0]
    part = minutes[:15]
    assert (first["open"], first["close"]) == (part[0].open, part[-1].close)
    assert (first["high"], first["low"]) == (max(c.high for c in part), min(c.low for c in part))
    assert first["volume"] == sum((c.volume for c in part), Decimal(0))


def test_figure_directions_colours_gaps_and_markers(settings: Settings, reader_pool: ConnectionPool) -> None:
    clear_candle_memo()
    insert_liquidations(settings.database_url, EVENTS)
    insert_candles(settings.database_url, make_candles("binance", "BTCUSDT", T0, 180))
    insert_coverage(settings.database_url, [Coverage(e, T0, T0 + HOUR, T0 + HOUR) for e in BOTH])
    f = Filters("BTCUSDT", BOTH)
    end = T0 + 3 * HOUR
    bars = liquidation_bars(reader_pool, f, T0, end, 300_000)
    marks = big_liquidations(reader_pool, f, T0, end, Decimal(100_000))
    assert list(marks["value_usd"]) == [Decimal("183000"), Decimal("120400")]
    gaps = coverage(reader_pool, f, T0, end).merged_gaps()
    assert gaps == [(T0 + HOUR, end)]
    fig = liquidation_chart(
        candles(reader_pool, "binance", "BTCUSDT", T0, end, 300_000, True),
        bars,
        gaps,
        marks,
        min_marker_usd=Decimal(100_000),
    )
    by_name = {t.name: t for t in fig.data}
    longs, shorts = by_name["LONG liquidated (USD)"], by_name["SHORT liquidated (USD)"]
    assert list(longs.y) == [-45025.0] and longs.marker.color == LONG_COLOR
    assert list(shorts.y) == [120400.0, 183000.0] and shorts.marker.color == SHORT_COLOR
    assert "$183,000.00" in shorts.hovertext[1] and "1 events, 3.0000 base" in shorts.hovertext[1]
    assert len(by_name["SHORT ≥ $100,000.00"].x) == 2
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].fillcolor is not None
    html = chart_html(fig)
    assert html.lstrip().lower().startswith("<!doctype html>") and 'src="http' not in html
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js embedded: works offline


def _figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_chart_page(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    now = now_ms()
    events = [
        liq("bybit", "LONG", "0.5", "60000", now - 3 * HOUR),
        liq("binance", "SHORT", "2", "60000", now - 2 * HOUR),
        liq("bybit", "SHORT", "0.1", "60000", now - 10 * 60_000),
    ]
    insert_liquidations(settings.database_url, events)
    insert_candles(settings.database_url, make_candles("binance", "BTCUSDT", now - 4 * HOUR, 240))
    insert_coverage(settings.database_url, [Coverage(e, now - 4 * HOUR, now, None) for e in BOTH])
    app_env(monkeypatch, settings)

    at = open_app("chart", {"hours": "24"})
    no_exceptions(at)
    assert "24 h · 5m bars" in all_text(at)
    spec = _figure(at)
    traces = {t.get("name"): t for t in spec["data"]}
    assert sum(traces["LONG liquidated (USD)"]["y"]) == -30000.0
    assert sum(traces["SHORT liquidated (USD)"]["y"]) == 126000.0
    assert sum(traces["Volume"]["y"]) == 240 * 12.5  # every seeded minute lands in a 5-minute bar
    assert len(traces["Volume"]["y"]) in (48, 49)
    assert "SHORT ≥ $100,000.00" in traces  # the 120,000 USD binance event is marked
    assert [getattr(b, "label", None) for b in at.get("download_button")][0] == "Download chart (HTML)"

    at.selectbox(key="c_interval").set_value("1h").run()
    no_exceptions(at)
    assert "1h bars" in all_text(at) and at.query_params["interval"] == "1h"
    at.toggle(key="c_markers").set_value(False).run()
    assert "SHORT ≥ $100,000.00" not in {t.get("name") for t in _figure(at)["data"]}

    at = open_app("chart", {"hours": "8760", "interval": "1m"})
    no_exceptions(at)
    assert any("too many" in w.value for w in at.warning)
    assert "1d bars" in all_text(at)

    at = open_app("chart", {"symbol": "ALL", "hours": "24"})
    no_exceptions(at)
    assert "Price and volume need one symbol" in all_text(at)
    assert sum(t for t in {t.get("name"): t for t in _figure(at)["data"]}["SHORT liquidated (USD)"]["y"]) == 126000.0


def test_chart_page_empty_and_gaps(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("chart", {"hours": "24"})
    no_exceptions(at)
    assert "Nothing to draw" in all_text(at)

    now = now_ms()
    insert_liquidations(settings.database_url, [liq("bybit", "LONG", "1", "100", now - HOUR)])
    insert_coverage(settings.database_url, [Coverage("bybit", now - 2 * HOUR, now, None)])
    app_env(monkeypatch, settings)
    at = open_app("chart", {"hours": "24", "exchanges": "bybit"})
    no_exceptions(at)
    spec = _figure(at)
    shapes = spec["layout"].get("shapes", [])
    assert len(shapes) == 1  # 22 h without bybit coverage, shaded
    assert "no stream coverage (missing data)" in {t.get("name") for t in spec["data"]}


def test_candle_memo_reuses_settled_bars_only(settings: Settings, reader_pool: ConnectionPool) -> None:
    clear_candle_memo()
    insert_candles(settings.database_url, make_candles("binance", "BTCUSDT", T0, 120))
    first = candles(reader_pool, "binance", "BTCUSDT", T0, T0 + 90 * 60_000, 900_000, True)
    assert len(first) == 6
    # Newer minutes arrive; the second call reuses the settled bars and queries only the rest.
    later = make_candles("binance", "BTCUSDT", T0 + 120 * 60_000, 30, price="70000")
    insert_candles(settings.database_url, later)
    second = candles(reader_pool, "binance", "BTCUSDT", T0 + 15 * 60_000, T0 + 150 * 60_000, 900_000, True)
    clear_candle_memo()
    cold = candles(reader_pool, "binance", "BTCUSDT", T0 + 15 * 60_000, T0 + 150 * 60_000, 900_000, True)
    assert second.equals(cold)
    assert len(second) == 9 and second.iloc[-1]["close"] == later[-1].close
