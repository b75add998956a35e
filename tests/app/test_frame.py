"""The frame: formatting, URL state, hostile parameters, the access gate, navigation, outages."""

from __future__ import annotations

import socket
from datetime import date
from decimal import Decimal

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as hs
from streamlit.testing.v1 import AppTest

from app.format import agg_table, fmt_age, fmt_date, fmt_datetime, fmt_duration, fmt_pct, fmt_qty, fmt_time, fmt_usd
from app.main import PAGES
from app.state import MAX_HOURS, ViewState, auto_interval, parse_state
from common.config import Settings
from tests.app.seed import (
    MAIN,
    all_text,
    app_env,
    insert_liquidations,
    liq,
    metric,
    no_exceptions,
    now_ms,
    open_app,
    redis_heartbeat,
    redis_liquidations,
    shown,
)

KNOWN = ["BTCUSDT", "ETHUSDT"]
EXCHANGES = ("binance", "bybit")


def test_formats() -> None:
    assert fmt_usd(Decimal("1234567.891")) == "$1,234,567.89"
    assert fmt_usd(Decimal("0.005")) == "$0.01"
    assert fmt_usd(-12) == "-$12.00"
    assert fmt_qty(Decimal("1234.56789")) == "1,234.5679"
    assert fmt_qty(Decimal("0.014")) == "0.0140"
    assert fmt_pct(Decimal("66.25")) == "66.3%"
    assert fmt_pct(None) == "–"
    ms = 1732400000123  # 20241123 22:13:20 UTC
    assert (fmt_date(ms), fmt_time(ms), fmt_datetime(ms)) == ("20241123", "22:13:20", "20241123 22:13:20 UTC")
    assert fmt_duration(3 * 86400 + 4 * 3600 + 5 * 60 + 6) == "3d 04:05:06"
    assert fmt_duration(59) == "00:00:59"
    assert fmt_age(None) == "never"


def test_agg_table_shares_and_mixed_assets() -> None:
    from app.data.history import Agg

    rows = agg_table(
        {"SHORT": Agg(1, Decimal("1"), Decimal("25")), "LONG": Agg(3, Decimal("2"), Decimal("75"))},
        "Side",
        ("LONG", "SHORT"),
    )
    assert [r["Side"] for r in rows] == ["LONG", "SHORT"]
    assert [r["Share of USD"] for r in rows] == ["75.0%", "25.0%"]
    mixed = agg_table({"LONG": Agg(1, Decimal("2"), Decimal("3"))}, "Side", mixed_assets=True)
    assert mixed[0]["Base quantity"] == "n/a (mixed assets)"


@pytest.mark.parametrize(
    ("params", "expected", "warned"),
    [
        ({}, ViewState(exchanges=EXCHANGES), False),
        ({"symbol": "ethusdt", "hours": "24"}, ViewState(symbol="ETHUSDT", exchanges=EXCHANGES, hours=24), False),
        ({"symbol": "ALL", "exchanges": "bybit"}, ViewState(symbol="ALL", exchanges=("bybit",)), False),
        ({"symbol": "DOGEUSDT"}, ViewState(exchanges=EXCHANGES), True),
        ({"symbol": "BTCUSDT'; DROP TABLE liquidations;--"}, ViewState(exchanges=EXCHANGES), True),
        ({"hours": "-5"}, ViewState(exchanges=EXCHANGES), True),
        ({"hours": "99999999999999999999"}, ViewState(exchanges=EXCHANGES), True),
        ({"hours": str(MAX_HOURS + 1)}, ViewState(exchanges=EXCHANGES), True),
        ({"hours": "all"}, ViewState(exchanges=EXCHANGES), False),
        ({"exchanges": "binance,okx"}, ViewState(exchanges=("binance",)), True),
        ({"since": "20250230"}, ViewState(exchanges=EXCHANGES), True),
        ({"since": "20250101", "until": "20241231"}, ViewState(exchanges=EXCHANGES, since=date(2025, 1, 1)), True),
        ({"since": "20990101"}, ViewState(exchanges=EXCHANGES), True),
        ({"interval": "7m", "side": "LONG"}, ViewState(exchanges=EXCHANGES, side="LONG"), True),
        ({"nonlive": "1", "markers": "0"}, ViewState(exchanges=EXCHANGES, include_nonlive=True, markers=False), False),
    ],
)
def test_parse_state(params: dict[str, str], expected: ViewState, warned: bool) -> None:
    state, warnings = parse_state(params, KNOWN, EXCHANGES, today=date(2026, 1, 1))
    assert state == expected
    assert bool(warnings) == warned, warnings


@hsettings(max_examples=200, deadline=None)
@given(
    hs.dictionaries(
        hs.sampled_from(
            ["symbol", "exchanges", "hours", "since", "until", "interval", "side", "nonlive", "markers", "x"]
        ),
        hs.text(max_size=300),
    )
)
def test_parse_state_never_raises_and_round_trips(params: dict[str, str]) -> None:
    state, _ = parse_state(params, KNOWN, EXCHANGES, today=date(2026, 1, 1))
    assert state.symbol in (*KNOWN, "ALL") and state.exchanges and set(state.exchanges) <= set(EXCHANGES)
    assert state.hours is None or 1 <= state.hours <= MAX_HOURS
    again, warnings = parse_state(state.to_params("BTCUSDT", EXCHANGES), KNOWN, EXCHANGES, today=date(2026, 1, 1))
    assert again == state and warnings == []


def test_time_range_and_auto_interval() -> None:
    now = 1_767_225_600_000  # 20260101 00:00:00 UTC
    assert ViewState(hours=24).time_range(now) == (now - 86_400_000, now)
    assert ViewState().time_range(now, first_ms=now - 5000) == (now - 5000, now)
    assert ViewState(since=date(2025, 12, 30), until=date(2025, 12, 30)).time_range(now) == (
        now - 2 * 86_400_000,
        now - 86_400_000,
    )
    hour = 3_600_000
    assert [auto_interval(h * hour) for h in (1, 24, 168, 720, 8760)] == ["1m", "5m", "1h", "4h", "1d"]


def test_navigation_lists_every_page_market_first() -> None:
    assert [p[2] for p in PAGES] == [
        "market",
        "live",
        "accumulated",
        "chart",
        "heatmap",
        "cascades",
        "alerts",
        "analyses",
        "explorer",
    ]


def test_hostile_url_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app(
        "accumulated", {"symbol": "1; SELECT pg_sleep(10)", "hours": "-3", "since": "<script>", "interval": "9" * 500}
    )
    no_exceptions(at)
    warnings = shown(" ".join(w.value for w in at.warning))
    assert (
        "Unknown symbol" in warnings and "hours='-3'" in warnings and "since=" in warnings and "interval=" in warnings
    )
    assert at.selectbox(key="f_symbol").value == "BTCUSDT"
    assert "symbol" not in at.query_params and "hours" not in at.query_params


def test_widgets_write_the_url_and_the_url_restores_them(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("accumulated")
    at.selectbox(key="f_symbol").set_value("ALL")
    at.multiselect(key="f_exchanges").set_value(["bybit"])
    at.select_slider(key="f_hours").set_value(168)
    at.toggle(key="f_nonlive").set_value(True)
    at.run()
    no_exceptions(at)
    params = {k: at.query_params[k] for k in at.query_params}
    assert params == {"symbol": "ALL", "exchanges": "bybit", "hours": "168", "nonlive": "1"}
    assert "TEST data — not live" in all_text(at)

    again = open_app("accumulated", params)  # a pasted link
    assert again.selectbox(key="f_symbol").value == "ALL"
    assert again.multiselect(key="f_exchanges").value == ["bybit"]
    assert again.select_slider(key="f_hours").value == 168
    assert again.toggle(key="f_nonlive").value is True


def test_password_gate(monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis) -> None:
    now = now_ms()
    events = [liq("bybit", "LONG", "1", "100", now - 1000)]
    insert_liquidations(settings.database_url, events)
    redis_liquidations(sync_redis, settings.redis_prefix, events)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    app_env(monkeypatch, settings, LIQ_APP_PASSWORD="s3cret-pw")
    at = open_app()
    no_exceptions(at)
    assert not at.metric and len(at.text_input) == 1  # nothing but the gate
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong password." in [e.value for e in at.error] and not at.metric
    at.text_input[0].input("s3cret-pw")
    at.button[0].click().run()
    no_exceptions(at)
    assert metric(at, "USD liquidated") == "$100.00"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("page", ["live", "accumulated", "chart"])
def test_services_down_show_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, page: str
) -> None:
    port = _closed_port()
    app_env(
        monkeypatch,
        settings,
        LIQ_APP_DATABASE_URL=f"postgresql://liq_reader@127.0.0.1:{port}/nowhere",
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
    )
    at = open_app(page)
    no_exceptions(at)
    errors = " ".join(e.value for e in at.error)
    assert ("Redis is not reachable" if page == "live" else "TimescaleDB is not reachable") in errors


def test_oidc_gate_replaces_the_password(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings, LIQ_APP_PASSWORD="ignored-when-oidc")
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.secrets["auth"] = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "test-cookie-secret",
        "client_id": "liq",
        "client_secret": "secret",
        "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
    }
    at.run()
    no_exceptions(at)
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.text_input and not at.metric  # neither the password form nor any page
