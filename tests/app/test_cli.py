"""`python -m app.cli`, run as a subprocess against the real seeded Redis and TimescaleDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis

from common.config import Settings
from common.events import Cascade, Liquidation, Side
from tests.app.seed import (
    HISTORY_START_MS,
    ROOT,
    expected_totals,
    history_select,
    insert_liquidations,
    liq,
    now_ms,
    redis_cascades,
    redis_heartbeat,
    redis_liquidations,
    seed_history,
)


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": str(settings.database_url),
        "LIQ_APP_DATABASE_URL": str(settings.app_database_url),
        "REDIS_URL": str(settings.redis_url),
        "LIQ_REDIS_PREFIX": settings.redis_prefix,
        "LIQ_NONLIVE_SOURCE": settings.nonlive_source,
        "LIQ_SYMBOLS": ",".join(settings.symbols),
        "LIQ_EXCHANGES": ",".join(settings.exchanges),
    }


def _run(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_all(settings: Settings, *commands: list[str], timeout: float = 120) -> list[subprocess.CompletedProcess[str]]:
    """Several read-only CLI runs at once (each one mostly waits on its imports)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:  # a run that timed out: stop it and the ones still waiting
                proc.kill()
                proc.communicate()
    return out


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
    seeded = seed_history(settings.database_url)
    ranged, whole, eth = _run_all(
        settings,
        ["totals", "--since", "20261101", "--until", "20261120", "--json"],
        ["totals", "--symbol", "ALL", "--include-nonlive", "--json"],  # whole history
        ["totals", "--symbol", "ethusdt", "--exchanges", "bybit", "--since", "20261105", "--json"],
    )
    data = _json(ranged)
    assert data["start"] == "20261101 00:00:00 UTC" and data["end"] == "20261121 00:00:00 UTC"
    _check_breakdown(data, history_select(seeded))

    data = _json(whole)
    _check_breakdown(data, seeded)
    assert data["unit"] is None and set(data["rates_per_hour"]) == {"events", "usd"}  # ALL: USD only
    for agg in (data["total"], *data["by_side"].values(), *data["by_exchange"].values()):
        assert "base_amount" not in agg and "quantity" not in agg
    data = _json(eth)
    _check_breakdown(
        data, history_select(seeded, HISTORY_START_MS + 4 * 86_400_000, symbol="ETHUSDT", exchanges=("bybit",))
    )


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def _section(lines: list[str], first: str, count: int) -> list[str]:
    """`count` lines from the one that equals `first`."""
    assert first in lines, "\n".join(lines)
    at = lines.index(first)
    return lines[at : at + count]


def _ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y%m%d %H:%M:%S").replace(tzinfo=UTC).timestamp() * 1000)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d")


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


BINANCE_NOTE = "  note: Binance figures are a lower bound: Binance sends at most one liquidation per symbol per second."

# --- totals: period, base amounts in the coin, rates ---------------------------------------------

TOTALS_ROWS = [
    liq("binance", "LONG", "0.5", "60000", _ms("20261101 00:00:05")),
    liq("bybit", "SHORT", "1.25", "60100", _ms("20261110 12:00:00")),
    liq("bybit", "LONG", "2", "61000", _ms("20261125 23:59:58")),
    liq("bybit", "LONG", "7", "61000", _ms("20261120 08:00:00"), source="test"),  # not live: not counted
    liq("binance", "SHORT", "3", "62000", _ms("20261126 00:00:00")),  # after --until 20261125
    liq("bybit", "LONG", "120000", "0.0105", _ms("20261105 00:00:00"), symbol="1000PEPEUSDT"),
    liq("binance", "SHORT", "250000", "0.0104", _ms("20261105 06:30:00"), symbol="1000PEPEUSDT"),
    liq("bybit", "SHORT", "4", "3000", _ms("20261103 09:15:00"), symbol="ETHUSDT"),
]


def test_totals_period_base_amounts_and_rates(settings: Settings) -> None:
    insert_liquidations(settings.database_url, TOTALS_ROWS)
    btc, as_json, pepe, whole, empty = _run_all(
        settings,
        ["totals", "--since", "20261101", "--until", "20261125"],
        ["totals", "--since", "20261101", "--until", "20261125", "--json"],
        ["totals", "--symbol", "1000pepeusdt"],
        ["totals", "--symbol", "ALL"],
        ["totals", "--since", "20261102", "--until", "20261102"],
    )
    lines = _lines(btc)
    # 3 live BTCUSDT rows from 20261101 00:00:05 to 20261125 23:59:58: 599.998 h; 3.75 BTC, $227,125
    assert lines == [
        "BTCUSDT · 20261101 .. 20261125 · 20261101 00:00:00 UTC .. 20261126 00:00:00 UTC",
        "  Data collection period: 20261101 00:00:05 UTC -> 20261125 23:59:58 UTC (24d 23h 59m)",
        "  BTCUSDT: 3 events | 3.7500 BTC | $227,125.00 | 100.0%",
        "  liquidated longs vs shorts (USD):",
        "    LONG: 2 events | 2.5000 BTC | $152,000.00 | 66.9%",
        "    SHORT: 1 events | 1.2500 BTC | $75,125.00 | 33.1%",
        "  by exchange:",
        "    binance (lower bound): 1 events | 0.5000 BTC | $30,000.00 | 13.2%",
        "    bybit: 2 events | 3.2500 BTC | $197,125.00 | 86.8%",
        "  largest liquidation: $122,000.00",
        BINANCE_NOTE,
        "  Average rates: 0.01 events/h | 0.0063 BTC/h | $378.54/h",
        "  connected: binance 0.0% of the period, bybit 0.0% of the period",
    ]
    # 1000PEPEUSDT reads PEPE: 120,000 + 250,000 units of 1000 PEPE over 6 h 30 min
    lines = _lines(pepe)
    assert lines[1:12] == [
        "  Data collection period: 20261105 00:00:00 UTC -> 20261105 06:30:00 UTC (6h 30m)",
        "  1000PEPEUSDT: 2 events | 370,000,000.0000 PEPE | $3,860.00 | 100.0%",
        "  liquidated longs vs shorts (USD):",
        "    LONG: 1 events | 120,000,000.0000 PEPE | $1,260.00 | 32.6%",
        "    SHORT: 1 events | 250,000,000.0000 PEPE | $2,600.00 | 67.4%",
        "  by exchange:",
        "    binance (lower bound): 1 events | 250,000,000.0000 PEPE | $2,600.00 | 67.4%",
        "    bybit: 1 events | 120,000,000.0000 PEPE | $1,260.00 | 32.6%",
        "  largest liquidation: $2,600.00",
        BINANCE_NOTE,
        "  Average rates: 0.31 events/h | 56,923,076.9231 PEPE/h | $593.85/h",
    ]

    # ALL: USD only, no base amount anywhere; the whole history's live rows
    lines = _lines(whole)
    assert lines[1:9] == [
        "  Data collection period: 20261101 00:00:05 UTC -> 20261126 00:00:00 UTC (24d 23h 59m)",
        "  ALL: 7 events | $428,985.00 | 100.0%",
        "  liquidated longs vs shorts (USD):",
        "    LONG: 3 events | $153,260.00 | 35.7%",
        "    SHORT: 4 events | $275,725.00 | 64.3%",
        "  by exchange:",
        "    binance (lower bound): 3 events | $218,600.00 | 51.0%",
        "    bybit: 4 events | $210,385.00 | 49.0%",
    ]
    assert "  Average rates: 0.01 events/h | $714.98/h" in lines

    lines = _lines(empty)  # no BTCUSDT liquidation on 20261102: no period, no rates
    assert lines[1:3] == [
        "  Data collection period: no liquidations in this range",
        "  BTCUSDT: 0 events | 0.0000 BTC | $0.00 | –",
    ]
    assert not any(line.startswith("  Average rates") for line in lines)

    data = _json(as_json)
    live = TOTALS_ROWS[:3]
    hours = Decimal(live[-1].time_ms - live[0].time_ms) / 3_600_000
    assert data["unit"] == "BTC"
    assert data["period"] == {
        "first": "20261101 00:00:05 UTC",
        "last": "20261125 23:59:58 UTC",
        "first_ms": live[0].time_ms,
        "last_ms": live[-1].time_ms,
        "duration": "24d 23h 59m",
        "duration_s": 2_159_993,
    }

    def rate(total: Decimal, places: str) -> str:
        return f"{(total / hours).quantize(Decimal(places), rounding=ROUND_HALF_UP):f}"

    assert data["rates_per_hour"] == {  # over the collection period, from the seeded rows
        "events": rate(Decimal(len(live)), "0.0001"),
        "base_amount": rate(sum((e.quantity for e in live), Decimal(0)), "0.00000001"),
        "usd": rate(sum((e.value_usd for e in live), Decimal(0)), "0.01"),
    }
    assert Decimal(data["total"]["base_amount"]) == Decimal("3.75")
    assert Decimal(data["by_side"]["SHORT"]["base_amount"]) == Decimal("1.25")
    assert Decimal(data["by_exchange"]["bybit"]["base_amount"]) == Decimal("3.25")
    assert data["lower_bound_note"] == BINANCE_NOTE.removeprefix("  note: ")
    _check_breakdown(data, live)


# --- snapshot: breakdown, latest 10, the few cascades that matter ----------------------------------


def _cascade(cascade_id: int, symbol: str, start: int, usd: str, active: bool = False) -> Cascade:
    return Cascade(
        id=cascade_id,
        symbol=symbol,
        side=Side.LONG,
        start_ms=start,
        end_ms=start + 4_000,
        count=5,
        quantity=Decimal("2.5"),
        value_usd=Decimal(usd),
        counts={"binance": 2, "bybit": 3},
        active=active,
    )


def _when(c: Cascade) -> str:
    start, end = _day(c.start_ms), _day(c.end_ms)
    until = _clock(c.end_ms) if end == start else f"{end} {_clock(c.end_ms)}"
    return f"{start} {_clock(c.start_ms)} -> {until} UTC"


def test_snapshot_text_latest_table_and_top_cascades(settings: Settings, sync_redis: redis.Redis) -> None:
    now = now_ms()
    t = [now - 60_000 * (i + 1) for i in range(12)]  # one a minute, newest first
    btc = [
        liq("binance", "LONG", "0.5", "60000", t[0]),
        liq("bybit", "SHORT", "1.25", "60100", t[1]),
        liq("bybit", "LONG", "0.001", "59999.9", t[2]),
        liq("binance", "SHORT", "2", "60000", t[3]),
        liq("bybit", "LONG", "0.1", "60000", t[4]),
        liq("binance", "LONG", "0.2", "60000", t[5]),
        liq("bybit", "SHORT", "0.3", "60000", t[6]),
        liq("binance", "SHORT", "0.4", "60000", t[7]),
        liq("bybit", "LONG", "0.6", "60000", t[8]),
        liq("binance", "LONG", "0.7", "60000", t[9]),
        liq("bybit", "SHORT", "0.8", "60000", t[10]),  # 11th and 12th: counted, not in the table
        liq("binance", "LONG", "0.9", "60000", t[11]),
    ]
    others = [
        liq("binance", "SHORT", "250000", "0.0104", now - 20_000, symbol="1000PEPEUSDT"),
        liq("bybit", "LONG", "2", "3000", now - 10_000, symbol="ETHUSDT"),
        liq("bybit", "LONG", "9", "60000", now - 3_700_000),  # before the window
    ]
    redis_liquidations(sync_redis, settings.redis_prefix, btc + others)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    start = now - 40 * 60_000
    btc_cascades = [
        _cascade(1, "BTC-USDT-PERP", start, "50000", active=True),  # small but active: shown first
        _cascade(2, "BTC-USDT-PERP", start + 60_000, "1000000"),
        _cascade(3, "BTC-USDT-PERP", start + 120_000, "900000"),
        _cascade(4, "BTCUSDT", start + 180_000, "800000"),  # stored before canonical names
        _cascade(5, "BTC-USDT-PERP", start + 240_000, "700000"),
        _cascade(6, "BTC-USDT-PERP", start + 300_000, "600000"),
        _cascade(7, "BTC-USDT-PERP", start + 360_000, "500000"),
    ]
    eth = _cascade(8, "ETH-USDT-PERP", start + 420_000, "650000")
    old = _cascade(9, "BTC-USDT-PERP", now - 2 * 3_600_000, "9000000")  # ended before the window
    redis_cascades(sync_redis, settings.redis_prefix, [*btc_cascades, eth, old])

    btc_out, pepe_out, all_out, json_out = _run_all(
        settings,
        ["snapshot"],
        ["snapshot", "--symbol", "1000PEPEUSDT"],
        ["snapshot", "--symbol", "ALL"],
        ["snapshot", "--json"],
    )
    lines = _lines(btc_out)
    assert lines[0].startswith("BTCUSDT · last 60 minutes · ") and lines[0].endswith(" · collector running")
    assert lines[1:11] == [
        "  BTCUSDT: 12 events | 7.7510 BTC | $465,185.00 | 100.0%",
        "  liquidated longs vs shorts (USD):",
        "    LONG: 7 events | 3.0010 BTC | $180,060.00 | 38.7%",
        "    SHORT: 5 events | 4.7500 BTC | $285,125.00 | 61.3%",
        "  by exchange:",
        "    binance (lower bound): 6 events | 4.7000 BTC | $282,000.00 | 60.6%",
        "    bybit: 6 events | 3.0510 BTC | $183,185.00 | 39.4%",
        "  largest liquidation: $120,000.00",
        BINANCE_NOTE,
        "  latest 10 liquidations (newest first):",
    ]
    d = [f"{_day(x)} | {_clock(x)}  " for x in t]
    assert lines[11:22] == [
        "    Date     | Time (UTC) | Exchange | Side  | Amount (BTC) | USD Value",
        f"    {d[0]} | binance  | LONG  |       0.5000 |  $30,000.00",
        f"    {d[1]} | bybit    | SHORT |       1.2500 |  $75,125.00",
        f"    {d[2]} | bybit    | LONG  |       0.0010 |      $60.00",
        f"    {d[3]} | binance  | SHORT |       2.0000 | $120,000.00",
        f"    {d[4]} | bybit    | LONG  |       0.1000 |   $6,000.00",
        f"    {d[5]} | binance  | LONG  |       0.2000 |  $12,000.00",
        f"    {d[6]} | bybit    | SHORT |       0.3000 |  $18,000.00",
        f"    {d[7]} | binance  | SHORT |       0.4000 |  $24,000.00",
        f"    {d[8]} | bybit    | LONG  |       0.6000 |  $36,000.00",
        f"    {d[9]} | binance  | LONG  |       0.7000 |  $42,000.00",
    ]
    c = {x.id: x for x in btc_cascades}
    assert lines[22:29] == [
        "  cascades (7 in the window; the largest by USD, active ones first):",
        f"    LONG BTC-USDT-PERP · {_when(c[1])} · still active: 5 events | 2.5000 BTC | $50,000.00 | binance, bybit",
        f"    LONG BTC-USDT-PERP · {_when(c[2])} · ended: 5 events | 2.5000 BTC | $1,000,000.00 | binance, bybit",
        f"    LONG BTC-USDT-PERP · {_when(c[3])} · ended: 5 events | 2.5000 BTC | $900,000.00 | binance, bybit",
        f"    LONG BTCUSDT · {_when(c[4])} · ended: 5 events | 2.5000 BTC | $800,000.00 | binance, bybit",
        f"    LONG BTC-USDT-PERP · {_when(c[5])} · ended: 5 events | 2.5000 BTC | $700,000.00 | binance, bybit",
        "    ... and 2 smaller cascades",
    ]
    assert lines[29].startswith("  storage: ")

    # 1000PEPEUSDT reads PEPE (x1000); one row: no cascades
    lines = _lines(pepe_out)
    assert lines[1:14] == [
        "  1000PEPEUSDT: 1 events | 250,000,000.0000 PEPE | $2,600.00 | 100.0%",
        "  liquidated longs vs shorts (USD):",
        "    LONG: 0 events | 0.0000 PEPE | $0.00 | 0.0%",
        "    SHORT: 1 events | 250,000,000.0000 PEPE | $2,600.00 | 100.0%",
        "  by exchange:",
        "    binance (lower bound): 1 events | 250,000,000.0000 PEPE | $2,600.00 | 100.0%",
        "    bybit: 0 events | 0.0000 PEPE | $0.00 | 0.0%",
        "  largest liquidation: $2,600.00",
        BINANCE_NOTE,
        "  latest liquidation:",
        "    Date     | Time (UTC) | Exchange | Side  | Amount (PEPE)    | USD Value",
        f"    {_day(now - 20_000)} | {_clock(now - 20_000)}   | binance  | SHORT | 250,000,000.0000 | $2,600.00",
        "  cascades: none in the last 60 minutes",
    ]

    # ALL: USD only, a Symbol column instead of the amount; every coin's cascades
    lines = _lines(all_out)
    assert lines[1:8] == [
        "  ALL: 14 events | $473,785.00 | 100.0%",
        "  liquidated longs vs shorts (USD):",
        "    LONG: 8 events | $186,060.00 | 39.3%",
        "    SHORT: 6 events | $287,725.00 | 60.7%",
        "  by exchange:",
        "    binance (lower bound): 7 events | $284,600.00 | 60.1%",
        "    bybit: 7 events | $189,185.00 | 39.9%",
    ]
    table = _section(lines, "  latest 10 liquidations (newest first):", 5)
    assert table[1:] == [
        "    Date     | Time (UTC) | Exchange | Symbol       | Side  | USD Value",
        f"    {_day(now - 10_000)} | {_clock(now - 10_000)}   | bybit    | ETHUSDT      | LONG  |   $6,000.00",
        f"    {_day(now - 20_000)} | {_clock(now - 20_000)}   | binance  | 1000PEPEUSDT | SHORT |   $2,600.00",
        f"    {d[0]} | binance  | BTCUSDT      | LONG  |  $30,000.00",
    ]
    cascades = _section(lines, "  cascades (8 in the window; the largest by USD, active ones first):", 7)
    assert [line.split(" · ")[0] for line in cascades[1:6]] == [
        "    LONG BTC-USDT-PERP",
        "    LONG BTC-USDT-PERP",
        "    LONG BTC-USDT-PERP",
        "    LONG BTCUSDT",
        "    LONG BTC-USDT-PERP",
    ]
    assert cascades[1].endswith("· still active: 5 events | $50,000.00 | binance, bybit")
    assert cascades[6] == "    ... and 3 smaller cascades"

    data = _json(json_out)
    _check_breakdown(data, btc)
    assert data["unit"] == "BTC" and Decimal(data["total"]["base_amount"]) == Decimal("7.751")
    assert len(data["latest"]) == 10 and data["latest_complete"] is True
    assert Decimal(data["latest"][0].pop("usd")) == 30_000
    assert data["latest"][0] == {
        "time_ms": t[0],
        "date": _day(t[0]),
        "time": _clock(t[0]),
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "side": "LONG",
        "base_amount": "0.5",
        "unit": "BTC",
        "source": "live",
    }
    assert [x["id"] for x in data["top_cascades"]] == [1, 2, 3, 4, 5] and data["cascades_omitted"] == 2
    assert sorted(x["id"] for x in data["cascades"]) == [1, 2, 3, 4, 5, 6, 7]
    assert data["top_cascades"][0]["active"] is True and data["top_cascades"][0]["base_amount"] == "2.5"


def test_export_streams_the_filtered_rows(settings: Settings, tmp_path: Path) -> None:
    seeded = seed_history(settings.database_url)
    target = tmp_path / "out" / "shorts.parquet"
    args = ["export", "--out", str(target), "--since", "20261101", "--until", "20261120", "--side", "short"]
    data = _json(_run(settings, *args, "--min-usd", "250000", "--json"))
    expected = [e for e in history_select(seeded, side="SHORT") if e.value_usd >= 250_000]
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
        (["totals", "--since", "20261110", "--until", "20261101"], "before since=20261110"),
        (["totals", "--target", "NOSUCHCOIN"], "Unknown coin"),
        (["totals", "--target", "okx:<b>"], "Unknown contract"),
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


def test_cascade_cut_and_durations_wording() -> None:
    from app.cli import _span, _top_cascades

    start = _ms("20261201 12:00:00")
    ended = [_cascade(i, "BTC-USDT-PERP", start + i * 60_000, str(100_000 * i)) for i in range(1, 5)]
    active = [_cascade(10 + i, "BTC-USDT-PERP", start, str(1_000 * i), active=True) for i in range(1, 7)]
    shown, line = _top_cascades(ended)
    assert [c.id for c in shown] == [4, 3, 2, 1] and line == ""
    shown, line = _top_cascades([*ended, *active[:2]])
    assert [c.id for c in shown] == [12, 11, 4, 3, 2] and line == "... and 1 smaller cascade"
    shown, line = _top_cascades([*ended, *active])  # six active: five shown, the rest are not "smaller"
    assert [c.id for c in shown] == [16, 15, 14, 13, 12] and line == "... and 5 more cascades (1 still active)"
    assert [_span(ms) for ms in (0, 40_500, 725_000, 23_400_000, 2_159_993_000)] == [
        "0s",
        "40s",
        "12m 5s",
        "6h 30m",
        "24d 23h 59m",
    ]
