"""The frame: formatting, URL state, hostile parameters, the access gate, navigation, outages."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
import redis
from streamlit.testing.v1 import AppTest

from app.format import agg_table, fmt_age, fmt_date, fmt_datetime, fmt_duration, fmt_pct, fmt_qty, fmt_time, fmt_usd
from app.main import PAGES
from app.query import all_target
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
    assert at.selectbox(key="f_target").value.param == "BTCUSDT"
    assert "symbol" not in at.query_params and "hours" not in at.query_params


def test_widgets_write_the_url_and_the_url_restores_them(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("accumulated")
    at.selectbox(key="f_target").set_value(all_target())
    at.multiselect(key="f_exchanges").set_value(["bybit"])
    at.select_slider(key="f_hours").set_value(168)
    at.toggle(key="f_nonlive").set_value(True)
    at.run()
    no_exceptions(at)
    params = {k: at.query_params[k] for k in at.query_params}
    assert params == {"target": "ALL", "exchanges": "bybit", "hours": "168", "nonlive": "1"}
    assert "TEST data — not live" in all_text(at)

    again = open_app("accumulated", params)  # a pasted link
    assert again.selectbox(key="f_target").value == all_target()
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
