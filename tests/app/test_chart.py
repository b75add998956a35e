"""Chart page: candle aggregation, liquidation bars, gaps, markers and the figure itself."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from streamlit.testing.v1 import AppTest

from app.charts import chart_html, liquidation_chart
from app.data.connections import open_pool
from app.data.history import big_liquidations, candles, coverage, liquidation_bars
from app.format import LONG_COLOR, SHORT_COLOR
from common.config import Settings
from common.events import Candle
from tests.app.seed import (
    Coverage,
    all_text,
    app_env,
    fq,
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
    f = fq("BTCUSDT", BOTH)
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
    daily = liquidation_bars(reader_pool, fq(None, BOTH), T0, T0 + 3 * HOUR, 86_400_000)
    assert {s: u for s, u in zip(daily["side"], daily["value_usd"], strict=True)} == {
        "LONG": Decimal("45025.00"),
        "SHORT": Decimal("120400") + Decimal("183000") + Decimal("61000"),
    }


def test_candles_aggregate_to_the_bar(settings: Settings, reader_pool: ConnectionPool) -> None:
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
    insert_liquidations(settings.database_url, EVENTS)
    insert_candles(settings.database_url, make_candles("binance", "BTCUSDT", T0, 180))
    insert_coverage(settings.database_url, [Coverage(e, T0, T0 + HOUR, T0 + HOUR) for e in BOTH])
    f = fq("BTCUSDT", BOTH)
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
    assert "Price and volume need a coin or a contract" in all_text(at)
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


def _minutes(rng: random.Random, start_ms: int, count: int, source: str = "live") -> list[Candle]:
    """Binance BTCUSDT minutes with random OHLCV, so first/last/max/min/sum all matter."""
    out = []
    for i in range(count):
        o, c = (Decimal(rng.randrange(5_000_000, 6_000_000)) / 100 for _ in range(2))
        v = Decimal(rng.randrange(1, 100_000)) / 1000
        out.append(
            Candle(
                "binance", "BTCUSDT", start_ms + i * 60_000, o, max(o, c) + rng.randrange(50), min(o, c) - 1, c,
                v, v * c, True, start_ms + i * 60_000 + 60_000, source,
            )
        )  # fmt: skip
    return out


def _expected_bars(minutes: list[Candle], start_ms: int, end_ms: int, interval_ms: int, live_only: bool) -> list[Any]:
    """The bars computed in Python from the same minutes: what both SQL paths must return."""
    lo = start_ms // interval_ms * interval_ms
    bars: dict[int, list[Candle]] = {}
    for m in sorted(minutes, key=lambda m: m.open_ms):
        if lo <= m.open_ms < end_ms and (m.source == "live" or not live_only):
            bars.setdefault(m.open_ms // interval_ms * interval_ms, []).append(m)
    return [
        (b, part[0].open, max(m.high for m in part), min(m.low for m in part), part[-1].close,
         sum((m.volume for m in part), Decimal(0)))
        for b, part in sorted(bars.items())
    ]  # fmt: skip


def _bars(frame: Any) -> list[Any]:
    return [(int(r[0].timestamp() * 1000), *r[1:]) for r in frame.itertuples(index=False)]


def test_hourly_and_minute_paths_give_the_same_bars(settings: Settings, reader_pool: ConnectionPool) -> None:
    rng = random.Random(1)
    # Three days of minutes with holes; one hour partly replayed (mixed sources), one all replayed.
    minutes = [m for m in _minutes(rng, T0, 3 * 1440) if rng.random() > 0.02]
    mixed, replayed = T0 + 26 * HOUR, T0 + 50 * HOUR
    minutes = [
        replace(m, source="replay")
        if mixed + 10 * 60_000 <= m.open_ms < mixed + 20 * 60_000 or replayed <= m.open_ms < replayed + HOUR
        else m
        for m in minutes
    ]
    insert_candles(settings.database_url, minutes)
    start, end = T0 + 5 * HOUR + 17 * 60_000, T0 + 70 * HOUR + 33 * 60_000  # the last hour is still open
    for live_only in (True, False):
        for interval in (900_000, HOUR, 4 * HOUR, 24 * HOUR):
            got = _bars(candles(reader_pool, "binance", "BTCUSDT", start, end, interval, live_only))
            assert got == _expected_bars(minutes, start, end, interval, live_only), (interval, live_only)
        # Hourly bars built from 15-minute bars of the minute path equal the hourly path (hourly bars
        # start at the hour holding `start`).
        quarter = _bars(candles(reader_pool, "binance", "BTCUSDT", start // HOUR * HOUR, end, 900_000, live_only))
        regrouped: dict[int, list[Any]] = {}
        for bar in quarter:
            regrouped.setdefault(bar[0] // HOUR * HOUR, []).append(bar)
        assert _bars(candles(reader_pool, "binance", "BTCUSDT", start, end, HOUR, live_only)) == [
            (h, p[0][1], max(b[2] for b in p), min(b[3] for b in p), p[-1][4], sum(b[5] for b in p))
            for h, p in sorted(regrouped.items())
        ]
    # Hourly bars really come from candles_1h: without it only the open hour at the end remains.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles_1h")
    assert [b[0] for b in _bars(candles(reader_pool, "binance", "BTCUSDT", start, end, HOUR, True))] == [
        end // HOUR * HOUR
    ]
