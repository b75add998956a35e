"""The cascades page and its queries against the real seeded TimescaleDB."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from psycopg_pool import ConnectionPool

from app.data import cascades
from app.format import fmt_count, fmt_pct, fmt_usd
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    HISTORY_CASCADE_LONG,
    HISTORY_CASCADE_SHORT,
    HISTORY_DAYS,
    HISTORY_LONG_START_MS,
    HISTORY_RANGE,
    HISTORY_SHORT_START_MS,
    HISTORY_START_MS,
    all_text,
    app_env,
    fq,
    history_candles,
    history_cascades,
    metric,
    no_exceptions,
    open_app,
    shown,
)

END_MS = HISTORY_START_MS + HISTORY_DAYS * 86_400_000


def _close_at(exchange: str, minute_ms: int) -> Decimal:
    (candle,) = [c for c in history_candles() if c.exchange == exchange and c.open_ms == minute_ms]
    return candle.close


def test_cascades_with_price_moves_from_candles(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    frame = cascades.cascades(pool, fq("BTCUSDT", ("binance", "bybit")), HISTORY_START_MS, END_MS)
    assert list(frame["id"]) == [HISTORY_CASCADE_SHORT, HISTORY_CASCADE_LONG]  # newest first
    expected = {c.id: c for c in history_cascades(seeded)}
    for _, row in frame.iterrows():
        c = expected[int(row["id"])]
        assert row["value_usd"] == c.value_usd and row["events"] == c.count
        assert row["events_by_exchange"] == c.counts
        assert row["duration_s"] == (c.end_ms - c.start_ms) / 1000
        assert row["price_move_pct"] == c.price_move_pct
        assert c.price_end is not None
        end_minute = c.end_ms - c.end_ms % 60_000
        first_exchange = sorted(c.counts)[0]  # the first exchange (by name) that has the candle
        for minutes in (15, 60):
            after = _close_at(first_exchange, end_minute + minutes * 60_000)
            assert row[f"move_{minutes}m_pct"] == (after - c.price_end) / c.price_end * 100
    assert bool(frame.loc[frame["id"] == HISTORY_CASCADE_LONG, "cross_exchange"].iloc[0])


def test_cascade_filters(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    q = fq("BTCUSDT", ("binance", "bybit"))
    span = (HISTORY_START_MS, END_MS)
    assert list(cascades.cascades(pool, replace(q, side="LONG"), *span)["id"]) == [HISTORY_CASCADE_LONG]
    assert list(cascades.cascades(pool, q, *span, exchange="binance")["id"]) == [HISTORY_CASCADE_LONG]
    assert list(cascades.cascades(pool, fq("BTCUSDT", ("binance",)), *span)["id"]) == [HISTORY_CASCADE_LONG]
    assert list(cascades.cascades(pool, replace(q, min_usd=Decimal(900_000)), *span)["id"]) == [HISTORY_CASCADE_SHORT]
    assert cascades.cascades(pool, replace(q, min_usd=Decimal(10_000_000)), *span).empty
    assert list(cascades.cascades(pool, q, *span, limit=1)["id"]) == [HISTORY_CASCADE_SHORT]  # the newest
    all_of_them = history_cascades(seeded)
    assert cascades.cascade_totals(pool, q, *span) == (2, sum(c.value_usd for c in all_of_them))
    assert cascades.cascade_totals(pool, replace(q, side="SHORT"), *span) == (1, all_of_them[1].value_usd)
    assert cascades.cascades(pool, fq("ETHUSDT", ("binance", "bybit")), *span).empty
    members = cascades.cascade_members(
        pool, HISTORY_CASCADE_LONG, HISTORY_LONG_START_MS, HISTORY_LONG_START_MS + 45_000
    )
    assert list(members["event_key"]) == [e.key for e in seeded if e.cascade_id == HISTORY_CASCADE_LONG]


def test_page_lists_cascades_and_zooms_into_one(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("cascades", {**HISTORY_RANGE, "cascade": str(HISTORY_CASCADE_LONG)})
    no_exceptions(at)
    cascades = history_cascades(seeded)
    assert metric(at, "Cascades") == fmt_count(2)
    assert metric(at, "USD in cascades") == fmt_usd(sum(c.value_usd for c in cascades))
    table = at.dataframe[0].value
    assert list(table["start (UTC)"]) == ["20261113 15:30:00", "20261106 10:00:00"]
    assert list(table["events per exchange"]) == ["bybit 5", "binance 2 · bybit 4"]
    assert list(table["duration"]) == ["00:00:20", "00:00:45"]
    long_cascade = cascades[0]
    assert long_cascade.price_move_pct is not None
    assert table["move during"].iloc[1] == fmt_pct(long_cascade.price_move_pct)
    # The chosen cascade (from the URL) is shown with its members.
    assert metric(at, "Cascade USD") == fmt_usd(long_cascade.value_usd)
    members = at.dataframe[1].value
    assert len(members) == long_cascade.count
    assert "20261106 10:00:00 UTC" in all_text(at)

    at.selectbox(key="cascade").set_value(HISTORY_CASCADE_SHORT).run()
    no_exceptions(at)
    assert metric(at, "Cascade USD") == fmt_usd(cascades[1].value_usd)
    assert len(at.dataframe[1].value) == cascades[1].count


def test_page_filters_and_empty_state(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("cascades", {**HISTORY_RANGE, "side": "SHORT"})
    no_exceptions(at)
    assert metric(at, "Cascades") == fmt_count(1)
    assert not at.radio and "Side" not in [s.label for s in at.main.selectbox]  # the sidebar's side only
    at.number_input(key="f_min_usd").set_value(5_000_000).run()
    no_exceptions(at)
    assert metric(at, "Cascades") == fmt_count(0)
    assert "No cascades in this range" in all_text(at)


def test_page_warns_on_hostile_params(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("cascades", {**HISTORY_RANGE, "c_min": "1e400", "min_usd": "-1", "c_side": "x", "cascade": "<b>"})
    no_exceptions(at)
    warnings = shown(" ".join(str(w.value) for w in at.warning))
    assert "min_usd" in warnings and "c_side" in warnings and "from the link is not in this selection" in warnings
    assert metric(at, "Cascades") == fmt_count(2)  # defaults: everything
    assert HISTORY_SHORT_START_MS > HISTORY_LONG_START_MS
