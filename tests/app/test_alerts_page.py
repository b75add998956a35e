"""Alerts page (app/data/alerts.py, app/pages/alerts.py): the rules table equals LIQ_ALERTS_FILE as
the alerter parses it, the history equals the seeded `alerts` rows for each filter (status, rule,
the sidebar's range), a malformed or missing file is explained without an exception, and venue
text in messages stays plain text."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb
from streamlit.testing.v1 import AppTest

from app.data.alerts import (
    HISTORY_COLUMNS,
    AlertFilter,
    alert_history,
    history_query,
    read_rules,
    rule_condition,
    status_counts,
)
from app.data.connections import open_pool
from app.data.export import export_query, frame_to_csv, frame_to_parquet
from app.format import fmt_date, fmt_time
from common.config import Settings
from tests.app.seed import all_text, app_env, metric, no_exceptions, now_ms, open_app, shown, ts

MINUTE = 60_000
HOUR = 3_600_000
HOSTILE = "BTC [click me](http://evil.example/x) <b>bold</b> <img src=x onerror=alert(1)> **big**"

RULES = """
[[rule]]
name = "btc-big"
kind = "liquidation"
coin = "BTC"
venues = ["binance", "bybit"]
side = "LONG"
min_usd = 250000
cooldown_s = 120

[[rule]]
name = "cross-cascades"
kind = "cascade"
contract = "BTC-USDT-PERP"
min_usd = 1000000
min_risk = 70
cross_venue_only = true

[[rule]]
name = "eth-15m"
kind = "volume"
coin = "ETH"
min_usd = 5000000
minutes = 15
include_nonlive = true

[[rule]]
name = "feeds"
kind = "stream"
minutes = 5
"""

EXPECTED_RULES = [
    ["btc-big", "liquidation", "coin BTC", "binance, bybit", "LONG", "USD >= $250,000.00", "120 s", "live only"],
    [
        "cross-cascades",
        "cascade",
        "contract BTC-USDT-PERP",
        "all",
        "ALL",
        "USD >= $1,000,000.00 and risk >= 70 and cross-venue only",
        "300 s",
        "live only",
    ],
    [
        "eth-15m",
        "volume",
        "coin ETH",
        "all",
        "ALL",
        "USD >= $5,000,000.00 and in 15 min",
        "300 s",
        "all (includes non-live)",
    ],
    ["feeds", "stream", "–", "all", "–", "down or silent > 5 min", "300 s", "live only"],
]


@dataclass(frozen=True)
class Row:
    rule: str
    kind: str
    key: str
    fired_ms: int
    status: str
    channel: str = "telegram"
    message: str = "hi"
    attempts: int = 1
    last_error: str = ""


def _seed(database_url: str, rows: list[Row]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO alerts (rule, kind, key, fired_at, message, status, attempts, channel, last_error, event)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [
                (r.rule, r.kind, r.key, ts(r.fired_ms), r.message, r.status, r.attempts, r.channel, r.last_error,
                 Jsonb({"key": r.key}))
                for r in rows
            ],
        )  # fmt: skip


def _rows(now: int) -> list[Row]:
    return [
        Row("btc-big", "liquidation", "e1", now - 5 * MINUTE, "delivered", message=HOSTILE),
        Row("btc-big", "liquidation", "e1", now - 5 * MINUTE + 1, "failed", "webhook", attempts=6,
            last_error="HTTP 500 <b>oops</b>"),
        Row("btc-big", "liquidation", "e2", now - 2 * HOUR, "delivered"),
        Row("cross-cascades", "cascade", "c7:start", now - 3 * HOUR, "fired", attempts=0),
        Row("feeds", "stream", "okx:down", now - 10 * HOUR, "delivered", message="okx down\nsince 5 min"),
        Row("old-rule", "liquidation", "e0", now - 30 * HOUR, "failed", attempts=6, last_error="timeout"),
        Row("btc-big", "liquidation", "e-1", now - 50 * HOUR, "delivered"),
    ]  # fmt: skip


def _expected(rows: list[Row], start: int, status: str | None = None, rule: str | None = None) -> list[list[str]]:
    picked = [r for r in rows if r.fired_ms >= start and status in (None, r.status) and rule in (None, r.rule)]
    picked.sort(key=lambda r: r.fired_ms, reverse=True)
    return [[fmt_date(r.fired_ms), fmt_time(r.fired_ms), r.rule, r.status, r.channel] for r in picked]


def _history(at: AppTest) -> list[list[str]]:
    df = at.dataframe[1].value
    return df[["Date", "Time (UTC)", "Rule", "Status", "Channel"]].astype(str).values.tolist()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(RULES, encoding="utf-8")
    return path


def test_rules_and_history_follow_the_filters(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, rules_file: Path
) -> None:
    now = now_ms()
    rows = _rows(now)
    _seed(settings.database_url, rows)
    app_env(monkeypatch, settings, LIQ_ALERTS_FILE=str(rules_file))
    at = open_app("alerts", {"hours": "24"})
    no_exceptions(at)
    assert [t.value for t in at.title] == ["Alerts"]

    rules = at.dataframe[0].value
    assert rules.values.tolist() == EXPECTED_RULES
    assert [r.name for r in read_rules(rules_file).rules] == list(rules["Name"])  # the alerter's parser

    start = now - 24 * HOUR
    assert _history(at) == _expected(rows, start)
    in_range = [r for r in rows if r.fired_ms >= start]
    assert metric(at, "Alerts fired") == str(len(in_range))
    assert metric(at, "Delivered") == str(sum(r.status == "delivered" for r in in_range))
    assert metric(at, "Failed") == str(sum(r.status == "failed" for r in in_range))
    assert metric(at, "Pending delivery") == str(sum(r.status == "fired" for r in in_range))
    text = all_text(at)
    assert (
        "the sidebar's time range applies (whole history: from the first alert); its coin or contract, exchanges, side, sources and minimum size do not"
        in text
    )
    # A rule no longer in the file still filters (its rows are in the table).
    assert at.selectbox(key="a_rule").options == ["all", "btc-big", "cross-cascades", "eth-15m", "feeds", "old-rule"]
    assert len(at.get("download_button")) == 2  # this page's rows; "all" is prepared on request
    assert [b.label for b in at.button] == ["Prepare all as CSV", "Prepare all as Parquet"]

    at.selectbox(key="a_status").set_value("failed").run()
    no_exceptions(at)
    assert _history(at) == _expected(rows, start, status="failed")
    assert at.query_params["status"] == "failed"
    assert metric(at, "Alerts fired") == str(len(in_range))  # metrics ignore the status filter

    at.selectbox(key="a_status").set_value("all")
    at.selectbox(key="a_rule").set_value("btc-big").run()
    assert _history(at) == _expected(rows, start, rule="btc-big")
    assert metric(at, "Alerts fired") == "3" and metric(at, "Delivered") == "2" and metric(at, "Failed") == "1"
    assert "status" not in at.query_params and at.query_params["rule"] == "btc-big"

    # The sidebar's range: 7 days reach the 50-hour-old row.
    at.select_slider(key="f_hours").set_value(168).run()
    no_exceptions(at)
    assert _history(at) == _expected(rows, now - 168 * HOUR, rule="btc-big")
    assert metric(at, "Alerts fired") == "4"


def test_url_filters_and_hostile_text(monkeypatch: pytest.MonkeyPatch, settings: Settings, rules_file: Path) -> None:
    now = now_ms()
    rows = _rows(now)
    _seed(settings.database_url, rows)
    app_env(monkeypatch, settings, LIQ_ALERTS_FILE=str(rules_file))
    at = open_app("alerts", {"hours": "24", "status": "delivered", "rule": "btc-big"})
    no_exceptions(at)
    assert _history(at) == _expected(rows, now - 24 * HOUR, status="delivered", rule="btc-big")
    table = at.dataframe[1].value
    assert table["Message"].tolist() == [HOSTILE, "hi"]  # a table cell is text, never Markdown or HTML
    # The message reader: Markdown that shows exactly the text, no link, no HTML.
    reader = [m.value for m in at.markdown if "click me" in shown(m.value)]
    assert len(reader) == 1
    assert shown(reader[0]) == HOSTILE
    assert "](http" not in reader[0] and "<b>" not in reader[0] and "**big**" not in reader[0]

    at.selectbox(key="a_status").set_value("failed").run()
    assert at.dataframe[1].value["Last error"].tolist() == ["HTTP 500 <b>oops</b>"]
    errors = [c.value for c in at.caption if "Last error" in c.value]
    assert errors and "<b>" not in errors[0] and "HTTP 500 <b>oops</b>" in shown(errors[0])

    at = open_app("alerts", {"status": "nope"})
    no_exceptions(at)
    assert "Ignored status='nope'" in all_text(at)
    assert _history(at) == _expected(rows, 0)  # no range in the link: the whole history, from the first alert


def test_malformed_and_missing_rules_files(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nkind = "liquidation"\nmin_usd = "lots"\n', encoding="utf-8")
    app_env(monkeypatch, settings, LIQ_ALERTS_FILE=str(bad))
    at = open_app("alerts")
    no_exceptions(at)
    errors = [shown(e.value) for e in at.error]
    assert len(errors) == 1 and f"{bad}: line 4: rule #1 key 'min_usd'" in errors[0], errors
    assert "No alert matches this filter" in all_text(at)  # the history still shows

    missing = tmp_path / "none.toml"
    app_env(monkeypatch, settings, LIQ_ALERTS_FILE=str(missing))
    at = open_app("alerts")
    no_exceptions(at)
    assert f"no rules file at {missing}" in all_text(at)
    assert not at.error


def test_reader_role_reads_and_exports_the_history(settings: Settings) -> None:
    now = now_ms()
    rows = _rows(now)
    _seed(settings.database_url, rows)
    f = AlertFilter(ts(now - 24 * HOUR), ts(now), status="failed")
    pool = open_pool(str(settings.app_database_url))  # liq_reader: SELECT on alerts (migration 0013)
    try:
        history = alert_history(pool, f)
        assert list(history.columns) == [*HISTORY_COLUMNS, "event"]
        assert history["key"].tolist() == ["e1"] and json.loads(history["event"][0]) == {"key": "e1"}
        assert status_counts(pool, f) == {"fired": 1, "delivered": 3, "failed": 1}  # the status filter does not apply
        lines = frame_to_csv(history, filter_description=f.describe()).decode().splitlines()
        assert lines[0].startswith("# liquidation-aggregator export | filter: alerts fired ") and len(lines) == 3
        assert frame_to_parquet(history, filter_description=f.describe())[:4] == b"PAR1"
        out = io.BytesIO()
        query, params = history_query(f)
        assert export_query(pool, query, params, out, "csv", filter_description=f.describe()) == 1
    finally:
        pool.close()


def test_conditions_and_columns() -> None:
    rule = read_rules(Path("/nonexistent/alerts.toml"))
    assert rule.error == "no rules file at /nonexistent/alerts.toml" and not rule.rules
    assert HISTORY_COLUMNS[:2] == ("id", "fired_at")
    from alerter.rules import parse_rules

    (cascade,) = parse_rules('[[rule]]\nname = "c"\nkind = "cascade"\nmin_risk = 70\n')
    assert rule_condition(cascade) == "risk >= 70"
