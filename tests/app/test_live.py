"""Live page: the exact 60-minute window from real Redis, pipeline states, banners, health."""

from __future__ import annotations

import pandas as pd
import pytest
import redis

from app.data.live import snapshot
from app.format import fmt_count, fmt_pct, fmt_qty, fmt_usd, share_pct
from common.config import Settings
from common.events import Liquidation
from common.live_view import Keys
from tests.app.seed import (
    all_text,
    app_env,
    cascade_of,
    expected_totals,
    health_snapshot,
    liq,
    metric,
    no_exceptions,
    now_ms,
    open_app,
    redis_cascades,
    redis_health,
    redis_heartbeat,
    redis_liquidations,
)

WINDOW = 3_600_000


def test_snapshot_window_is_exact_at_both_ends(sync_redis: redis.Redis, redis_prefix: str) -> None:
    now = 1_767_225_600_000
    inside = [
        liq("bybit", "LONG", "1.5", "100", now - WINDOW),  # oldest included: [now - 3_600_000, now]
        liq("binance", "SHORT", "0.25", "200", now),
        liq("bybit", "SHORT", "2", "50.5", now - 1000),
    ]
    outside = [
        liq("bybit", "LONG", "9", "100", now - WINDOW - 1),
        liq("bybit", "LONG", "9", "100", now + 1),
        liq("bybit", "LONG", "9", "100", now - 1000, symbol="ETHUSDT"),
    ]
    redis_liquidations(sync_redis, redis_prefix, inside + outside)
    snap = snapshot(sync_redis, Keys(redis_prefix), "BTCUSDT", ("binance", "bybit"), now=now)
    want = expected_totals(inside)
    assert (snap.totals.total.events, snap.totals.total.quantity, snap.totals.total.usd) == (3, want.quantity, want.usd)
    assert snap.totals.by_side["SHORT"].usd == want.by_side["SHORT"].usd
    assert list(snap.events["time_ms"]) == [now, now - 1000, now - WINDOW]  # newest first

    only_bybit = snapshot(sync_redis, Keys(redis_prefix), "BTCUSDT", ("bybit",), now=now)
    assert only_bybit.totals.total.events == 2
    all_symbols = snapshot(sync_redis, Keys(redis_prefix), None, ("binance", "bybit"), now=now)
    assert all_symbols.totals.total.events == 4
    assert snap.collector_state() == "missing"


def _seed_window(sync_redis: redis.Redis, prefix: str, now: int, source: str = "live") -> list[Liquidation]:
    events = [
        liq("bybit", "LONG", "0.5", "60000", now - 3_000_000, source=source),
        liq("bybit", "LONG", "0.125", "60010.5", now - 120_000, source=source),
        liq("binance", "SHORT", "0.014", "61000.1", now - 60_000, source=source),
        liq("binance", "LONG", "1.2345", "59999.99", now - 30_000, source=source),
    ]
    stale = [liq("bybit", "SHORT", "7", "60000", now - WINDOW - 200_000, source=source)]  # trimmed margin, not shown
    other = [liq("bybit", "SHORT", "3", "3000", now - 10_000, symbol="ETHUSDT", source=source)]
    redis_liquidations(sync_redis, prefix, events + stale + other)
    return events


def test_live_page_shows_exact_totals(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    events = _seed_window(sync_redis, settings.redis_prefix, now)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [health_snapshot("binance", now, reconnects=2, drops={"bad_json": 3}), health_snapshot("bybit", now)],
    )
    members = [m for m in events if m.exchange == "bybit"]
    redis_cascades(sync_redis, settings.redis_prefix, [cascade_of(members, 77, active=True)])
    app_env(monkeypatch, settings)

    at = open_app("live")
    no_exceptions(at)
    want = expected_totals(events)
    assert metric(at, "Liquidations") == fmt_count(want.count) == "4"
    assert metric(at, "Base quantity") == fmt_qty(want.quantity)
    assert metric(at, "USD liquidated") == fmt_usd(want.usd)
    assert metric(at, "Cascades") == "1"
    assert not at.error and not at.warning

    sides = at.dataframe[0].value
    assert list(sides["Side"]) == ["LONG", "SHORT"]
    for side in ("LONG", "SHORT"):
        row = sides[sides["Side"] == side].iloc[0]
        agg = want.by_side[side]
        assert (row["Events"], row["Base quantity"], row["USD"], row["Share of USD"]) == (
            fmt_count(agg.count),
            fmt_qty(agg.quantity),
            fmt_usd(agg.usd),
            fmt_pct(share_pct(agg.usd, want.usd)),
        )
    exchanges = at.dataframe[1].value
    assert list(exchanges["Exchange"]) == ["binance (lower bound)", "bybit"]
    assert list(exchanges["USD"]) == [fmt_usd(want.by_exchange[e].usd) for e in ("binance", "bybit")]
    assert "lower bound" in all_text(at)

    latest: pd.DataFrame = at.dataframe[2].value
    first = events[-1]
    assert list(latest.iloc[0][["Date", "Time (UTC)", "Exchange", "Side", "Amount", "USD", "Price"]]) == [
        first.date_str,
        first.time_str,
        "binance",
        "LONG",
        "1.2345",
        fmt_usd(first.value_usd),
        "$59,999.99",
    ]
    assert len(latest) == 4
    cascades = at.dataframe[3].value
    assert list(cascades[["State", "Side", "Events"]].iloc[0]) == ["active", "LONG", "2"]
    health = at.dataframe[4].value
    binance = health[health["Stream"] == "binance"].iloc[0]
    assert (binance["Connected"], binance["Reconnects"], binance["Drops"]) == ("yes", "2", "3 (bad_json: 3)")


def test_all_symbols_sum_usd(monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis) -> None:
    now = now_ms()
    events = _seed_window(sync_redis, settings.redis_prefix, now)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    app_env(monkeypatch, settings)
    at = open_app("live", {"symbol": "ALL"})
    no_exceptions(at)
    usd = expected_totals(events).usd + 3 * 3000
    assert metric(at, "USD liquidated") == fmt_usd(usd)
    assert metric(at, "Base quantity") == "n/a (mixed assets)"


def test_collector_missing_stale_and_quiet(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert "Collector not running: no heartbeat" in all_text(at)

    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now - 60_000)
    app_env(monkeypatch, settings)
    at = open_app("live")
    assert "Collector not running: its last heartbeat was 00:01:0" in all_text(at)
    assert "No liquidations in the last 60 minutes" not in all_text(at)

    redis_heartbeat(sync_redis, settings.redis_prefix, now_ms())
    redis_health(sync_redis, settings.redis_prefix, [health_snapshot("binance", now), health_snapshot("bybit", now)])
    app_env(monkeypatch, settings)
    at = open_app("live")
    text = all_text(at)
    assert "No liquidations in the last 60 minutes" in text and "Collector not running" not in text
    assert metric(at, "Liquidations") == "0"


def test_disconnected_stream_is_not_a_quiet_market(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("binance", now),
            health_snapshot("bybit", now, connected=False, last_message_ms=now - 300_000, last_error="silence 30 s"),
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "Stream bybit disconnected: last message 5 min ago" in warnings and "silence 30 s" in warnings
    assert "binance" not in warnings
    health = at.dataframe[-1].value
    assert list(health["Connected"]) == ["yes", "no"]


def test_no_stream_connected_is_missing_data_not_a_quiet_market(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot(e, now, connected=False, last_message_ms=None, last_error="gaierror")
            for e in ("binance", "bybit")
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    text = all_text(at)
    assert "missing data, not a quiet market" in text
    assert "simply been quiet" not in text
    assert not any("not live" in e.value for e in at.error), "live sources must not get the replay banner"


def test_stream_reconnected_inside_the_window_is_flagged(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [health_snapshot("binance", now), health_snapshot("bybit", now, connected_since_ms=now - 600_000)],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    infos = " ".join(i.value for i in at.info)
    assert "Stream bybit connected since" in infos and "Stream binance connected since" not in infos
    assert "simply been quiet" in infos


def test_replay_data_gets_a_banner(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    events = _seed_window(sync_redis, settings.redis_prefix, now, source="replay")
    redis_heartbeat(sync_redis, settings.redis_prefix, now, source="replay")
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert any("REPLAY data — not live" in e.value for e in at.error)
    assert metric(at, "USD liquidated") == fmt_usd(expected_totals(events).usd)
