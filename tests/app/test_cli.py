"""`python -m app.cli`, run as a subprocess against the real seeded Redis and TimescaleDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis

from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    APP2_START_MS,
    ROOT,
    app2_select,
    expected_totals,
    liq,
    now_ms,
    redis_heartbeat,
    redis_liquidations,
    seed_app2,
)


def _run(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": str(settings.database_url),
        "LIQ_APP_DATABASE_URL": str(settings.app_database_url),
        "REDIS_URL": str(settings.redis_url),
        "LIQ_REDIS_PREFIX": settings.redis_prefix,
        "LIQ_NONLIVE_SOURCE": settings.nonlive_source,
        "LIQ_SYMBOLS": ",".join(settings.symbols),
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _check_breakdown(data: dict[str, Any], liqs: list[Liquidation]) -> None:
    t = expected_totals(liqs)
    assert Decimal(data["total"]["usd"]) == t.usd and data["total"]["events"] == t.count
    for side in ("LONG", "SHORT"):
        assert Decimal(data["by_side"][side]["usd"]) == t.by_side[side].usd
        assert data["by_side"][side]["events"] == t.by_side[side].count
        assert data["by_side"][side]["share_pct"] == f"{t.by_side[side].usd / t.usd * 100:.1f}"
    for exchange, agg in t.by_exchange.items():
        assert Decimal(data["by_exchange"][exchange]["usd"]) == agg.usd


def test_totals_json_equals_seeded_rows(settings: Settings) -> None:
    seeded = seed_app2(settings.database_url)
    data = _json(_run(settings, "totals", "--since", "20261101", "--until", "20261120", "--json"))
    assert data["start"] == "20261101 00:00:00 UTC" and data["end"] == "20261121 00:00:00 UTC"
    _check_breakdown(data, app2_select(seeded))

    data = _json(_run(settings, "totals", "--symbol", "ALL", "--include-nonlive", "--json"))  # whole history
    _check_breakdown(data, seeded)
    data = _json(
        _run(settings, "totals", "--symbol", "ethusdt", "--exchanges", "bybit", "--since", "20261105", "--json")
    )
    _check_breakdown(data, app2_select(seeded, APP2_START_MS + 4 * 86_400_000, symbol="ETHUSDT", exchanges=("bybit",)))


def test_totals_text_layout(settings: Settings) -> None:
    seed_app2(settings.database_url)
    out = _run(settings, "totals", "--since", "20261101", "--until", "20261120")
    assert out.returncode == 0, out.stderr
    assert "BTCUSDT · 20261101 .. 20261120 · 20261101 00:00:00 UTC .. 20261121 00:00:00 UTC" in out.stdout
    assert "liquidated longs vs shorts (USD)" in out.stdout and "LONG" in out.stdout and "bybit" in out.stdout
    assert "lower bound" in out.stdout and "connected:" in out.stdout
    assert out.stderr == ""


def test_snapshot_json_equals_the_redis_window(settings: Settings, sync_redis: redis.Redis) -> None:
    now = now_ms()
    inside = [
        liq("binance", "LONG", "0.5", "60000", now - 60_000),
        liq("bybit", "SHORT", "1.25", "60100.5", now - 30 * 60_000),
        liq("bybit", "LONG", "0.001", "59999.9", now - 5_000),
    ]
    outside = [
        liq("bybit", "LONG", "9", "60000", now - 3_700_000),
        liq("bybit", "LONG", "2", "3000", now, symbol="ETHUSDT"),
    ]
    redis_liquidations(sync_redis, settings.redis_prefix, inside + outside)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    data = _json(_run(settings, "snapshot", "--json"))
    assert data["collector"] == "running" and data["symbol"] == "BTCUSDT"
    _check_breakdown(data, inside)
    out = _run(settings, "snapshot")
    assert out.returncode == 0 and "last 60 minutes" in out.stdout and "collector running" in out.stdout


def test_export_streams_the_filtered_rows(settings: Settings, tmp_path: Path) -> None:
    seeded = seed_app2(settings.database_url)
    target = tmp_path / "out" / "shorts.parquet"
    args = ["export", "--out", str(target), "--since", "20261101", "--until", "20261120", "--side", "short"]
    data = _json(_run(settings, *args, "--min-usd", "250000", "--json"))
    expected = [e for e in app2_select(seeded, side="SHORT") if e.value_usd >= 250_000]
    assert data["rows"] == len(expected) > 0
    table = pq.read_table(target)
    assert sorted(table.column("event_key").to_pylist()) == sorted(e.key for e in expected)
    csv_out = tmp_path / "all.csv"
    data = _json(_run(settings, "export", "--out", str(csv_out), "--symbol", "ALL", "--include-nonlive", "--json"))
    assert data["rows"] == len(seeded)
    assert len(csv_out.read_text().splitlines()) == len(seeded) + 2  # filter line + header


def test_chart_writes_html(settings: Settings, tmp_path: Path) -> None:
    now = now_ms()
    from tests.app.seed import insert_candles, insert_liquidations, make_candles

    liqs = [liq("bybit", "LONG", "1", "60000", now - 600_000), liq("binance", "SHORT", "2", "60010", now - 300_000)]
    insert_liquidations(settings.database_url, liqs)
    insert_candles(settings.database_url, make_candles("binance", "BTCUSDT", now - 1_800_000, 30))
    target = tmp_path / "chart.html"
    data = _json(_run(settings, "chart", "--hours", "1", "--out", str(target), "--json"))
    assert Decimal(data["usd"]) == sum(e.value_usd for e in liqs)
    assert data["candles"] > 0 and data["interval"] == "1m"
    html = target.read_text()
    assert "<html>" in html[:100] and "plotly" in html.lower() and "liquidated longs vs shorts (USD)" in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["totals", "--since", "2026-11-01"], "YYYYMMDD"),
        (["totals", "--since", "20261301"], "not a real date"),
        (["totals", "--hours", "-5"], "whole hours"),
        (["totals", "--hours", "99999999"], "whole hours"),
        (["totals", "--hours", "5", "--since", "20261101"], "either --hours"),
        (["totals", "--since", "20261110", "--until", "20261101"], "before --since"),
        (["totals", "--symbol", "BTC'; DROP TABLE x;--"], "symbol like BTCUSDT"),
        (["snapshot", "--exchanges", "okx"], "unknown okx"),
        (["chart", "--hours", "1", "--out", "x.png"], "must end in .html"),
        (["export", "--out", "x.xlsx"], ".csv or .parquet"),
        (["export", "--out", "x.csv", "--min-usd", "lots"], "USD amount"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(settings: Settings, args: list[str], message: str) -> None:
    out = _run(settings, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_database_exits_1(settings: Settings) -> None:
    bad = Settings(**{**settings.__dict__, "app_database_url": "postgresql://liq_reader@127.0.0.1:1/nowhere"})
    out = _run(bad, "totals", "--json")
    assert out.returncode == 1 and "TimescaleDB is not reachable" in out.stderr and "Traceback" not in out.stderr
