"""The alerter against real Redis and TimescaleDB, with fake Telegram and webhook endpoints."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families

from alerter.messages import when
from alerter.stream import GROUP, stream_key
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch
from common.events import Cascade, Liquidation, Side
from common.live_view import Keys, stream_cascades, stream_liquidations
from tests.alerter.conftest import APP, SECRET, Alerter, alert_rows, cascade, liq, now_ms, until
from tests.alerter.fakes import FakeHttp
from tests.dashboard import dashboard_metrics
from tests.services import ROOT, service_env

LIQ_RULES = """
[[rule]]
name = "btc-big"
kind = "liquidation"
coin = "BTC"
venues = ["binance", "okx"]
min_usd = 100000
cooldown_s = 3600
"""


async def test_liquidation_rule_fires_once_per_cooldown(alerter: Alerter) -> None:
    await alerter.start(LIQ_RULES)
    t = now_ms() - 5_000
    first = liq(time_ms=t, key=11)
    alerter.append("liquidation", first)  # fires
    alerter.append("liquidation", first)  # the same event from a second collector: deduplicated
    alerter.append("liquidation", liq("ETHUSDT", quantity="200", price="3000"))  # another coin
    alerter.append("liquidation", liq(quantity="0.5"))  # $50,000: below min_usd
    alerter.append("liquidation", liq(exchange="bybit", quantity="9"))  # a venue the rule does not follow
    alerter.append("liquidation", liq(quantity="10", source="replay"))  # not live
    alerter.append("liquidation", liq(quantity="3"))  # BTC again within the cooldown: suppressed
    await alerter.settle(7)

    expected = "\n".join(
        (
            "LIQUIDATION LONG BTC $200,000.00",
            when(t),
            "Binance BTCUSDT: 2.0000 BTC at $100,000.00 (sampled feed)",
            "rule btc-big | source live",
            f"{APP}/explorer?symbol=BTCUSDT&exchanges=binance&side=LONG&min_usd=100000",
        )
    )
    assert alerter.telegram.texts() == [expected]
    (tg,) = alerter.telegram.requests
    assert tg.path == "/bot123:abc/sendMessage"
    assert tg.json()["chat_id"] == "-100200"
    (hook,) = alerter.webhook.requests
    assert hook.path == "/hook"
    body = hook.json()
    assert (body["rule"], body["kind"], body["key"], body["text"]) == ("btc-big", "liquidation", "11", expected)
    assert body["event"]["value_usd"] == "200000"
    # the HMAC header verifies with the shared secret
    assert (
        hook.headers["x-liq-signature"] == "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    )
    rows = alert_rows(alerter.db)
    assert [(r["channel"], r["status"], r["attempts"], r["key"]) for r in rows] == [
        ("telegram", "delivered", 1, "11"),
        ("webhook", "delivered", 1, "11"),
    ]
    assert alerter.redis.exists(f"{alerter.prefix}alert:fired:btc-big:11")


CASCADE_RULES = """
[[rule]]
name = "casc"
kind = "cascade"
coin = "BTC"
min_usd = 100000
cooldown_s = 0

[[rule]]
name = "cross"
kind = "cascade"
min_risk = 60
cross_venue_only = true
"""


async def test_cascade_start_and_end_messages(alerter: Alerter) -> None:
    await alerter.start(CASCADE_RULES, LIQ_WEBHOOK_FORMAT="slack")
    s = now_ms() - 60_000
    alerter.append("cascade", cascade(7, {"binance": "50000"}, start_ms=s, end_ms=s + 10_000))  # below both
    alerter.append("cascade", cascade(7, {"binance": "150000"}, start_ms=s, end_ms=s + 20_000))  # casc starts
    alerter.append("cascade", cascade(7, {"binance": "150000", "okx": "50000"}, start_ms=s, end_ms=s + 30_000, risk=70))
    final = cascade(
        7, {"binance": "180000", "okx": "70000"}, active=False, start_ms=s, end_ms=s + 95_000, risk=70, events=42
    )
    alerter.append("cascade", final)
    alerter.append("cascade", final)  # re-sent: nothing more
    alerter.append("cascade", cascade(8, {"bybit": "900000"}, symbol="ETH-USDT-PERP", start_ms=s, end_ms=s, risk=90))
    await alerter.settle(6)

    texts = alerter.telegram.texts()
    assert alerter.webhook.texts() == texts  # slack format: {"text": ...}
    assert set(alerter.webhook.requests[0].json()) == {"text"}
    assert texts == [
        "\n".join(
            (
                "CASCADE STARTED LONG BTC-USDT-PERP",
                f"since {when(s)}",
                "$150,000.00 (1.5000 BTC), 10 liquidations so far",
                "venues: Binance $150,000.00",
                "risk 50/100",
                "rule casc | source live",
                f"{APP}/cascades?symbol=BTCUSDT&cascade=7",
            )
        ),
        "\n".join(
            (
                "CASCADE STARTED LONG BTC-USDT-PERP",
                f"since {when(s)}",
                "$200,000.00 (2.0000 BTC), 10 liquidations so far",
                "venues: Binance $150,000.00, OKX $50,000.00 (cross-venue)",
                "risk 70/100",
                "rule cross | source live",
                f"{APP}/cascades?symbol=BTCUSDT&cascade=7",
            )
        ),
        "\n".join(
            (
                "CASCADE ENDED LONG BTC-USDT-PERP",
                f"{when(s)} to {when(s + 95_000)[9:17]} UTC (1m35s)",
                "total $250,000.00 (2.5000 BTC), 42 liquidations",
                "venues: Binance $180,000.00, OKX $70,000.00 (cross-venue)",
                "risk 70/100",
                "rule casc | source live",
                f"{APP}/cascades?symbol=BTCUSDT&cascade=7",
            )
        ),
        texts[3],
    ]
    assert texts[3].startswith("CASCADE ENDED LONG BTC-USDT-PERP") and "rule cross" in texts[3]
    keys = sorted((r["rule"], r["key"]) for r in alert_rows(alerter.db) if r["channel"] == "telegram")
    assert keys == [
        ("casc", "cascade:7:end"),
        ("casc", "cascade:7:start"),
        ("cross", "cascade:7:end"),
        ("cross", "cascade:7:start"),
    ]


async def test_volume_rule_sums_every_liquidation_of_the_window(alerter: Alerter) -> None:
    """The sums come from the live view the collector's real Redis writer keeps: small liquidations
    that never enter the alert stream count, a second collector's copies count once."""
    rules = '[[rule]]\nname = "btc-5m"\nkind = "volume"\ncoin = "BTC"\nside = "LONG"\nmin_usd = 500000\nminutes = 5\n'
    live = RedisLive(service_env()["REDIS_URL"], alerter.prefix, stream_min_usd=Decimal(10_000))
    await live.open()
    alerter.redis.set(Keys(alerter.prefix).built, "1")  # as after the collector's first rebuild
    try:
        t = now_ms() - 60_000
        small = [_event("binance", "BTCUSDT", t + i, "0.05") for i in range(40)]  # 40 x $5,000, below the floor
        big = _event("bybit", "BTCUSDT", t + 100, "2.5")  # $250,000
        others = [
            _event("binance", "BTCUSDT", t, "5", side=Side.SHORT),  # the other side
            _event("binance", "ETHUSDT", t, "9"),  # another coin
            _event("binance", "BTCUSDT", now_ms() - 400_000, "9"),  # before the window
            _event("binance", "BTCUSDT", t, "9", source="replay"),  # not live
        ]
        assert await live.write(Batch(liquidations=[*small, big, *others]))
        assert await live.write(Batch(liquidations=[*small, big]))  # the second collector: counted once
        await alerter.start(rules, LIQ_WEBHOOK_FORMAT="discord", LIQ_ALERT_VOLUME_INTERVAL_S="0.05")
        await asyncio.sleep(0.5)
        assert alerter.telegram.requests == []  # $450,000 so far
        okx = _event("okx", "BTC-USDT-SWAP", t + 200, "1")  # $100,000 -> $550,000
        assert await live.write(Batch(liquidations=[okx]))
        await until(lambda: len(alerter.telegram.requests) == 1)
        assert await live.write(Batch(liquidations=[_event("binance", "BTCUSDT", t + 300, "1")]))
        await asyncio.sleep(0.5)  # within the cooldown: nothing more
    finally:
        await live.close()
    (text,) = alerter.telegram.texts()
    lines = text.split("\n")
    assert lines[0] == "VOLUME LONG BTC: $550,000.00 liquidated in 5 min"
    assert lines[1].startswith("42 liquidations, as of ") and lines[1].endswith(" UTC")
    assert lines[2:] == ["venues: Binance, Bybit, OKX", "rule btc-5m", f"{APP}/explorer?symbol=BTCUSDT&side=LONG"]
    assert alerter.webhook.requests[0].json() == {"content": text}
    (row, _) = alert_rows(alerter.db)
    assert row["kind"] == "volume" and row["status"] == "delivered"


def _event(
    exchange: str, symbol: str, time_ms: int, qty: str, side: Side = Side.LONG, source: str = "live"
) -> Liquidation:
    price = Decimal(100_000)
    quantity = Decimal(qty)
    return Liquidation(
        exchange, symbol, side, quantity, price, quantity * price, time_ms, time_ms + 5, "SELL", source, False
    )


async def test_stream_rule_down_and_recovery(alerter: Alerter) -> None:
    rules = '[[rule]]\nname = "feeds"\nkind = "stream"\nvenues = ["okx"]\nminutes = 0.005\n'  # 0.3 s
    health = f"{alerter.prefix}live:health"

    def snap(connected: bool, age: float | None) -> str:
        return json.dumps({"connected": connected, "last_message_age_s": age, "at_ms": now_ms(), "source": "live"})

    alerter.redis.hset(health, mapping={"okx": snap(False, 2.0), "binance": snap(False, None)})
    await alerter.start(rules)
    await until(lambda: len(alerter.telegram.requests) == 1)
    alerter.redis.hset(health, mapping={"okx": snap(True, 0.1)})
    await until(lambda: len(alerter.telegram.requests) == 2)
    await alerter.stop()
    down, up = alerter.telegram.texts()
    assert down.startswith("STREAM DOWN OKX: ") and "rule feeds" in down
    assert up.startswith("STREAM RECOVERED OKX\nat ")
    assert all(r["status"] == "delivered" for r in alert_rows(alerter.db))


async def test_failing_endpoint_is_retried_then_recorded_failed(alerter: Alerter) -> None:
    alerter.webhook.status = 500
    await alerter.start(LIQ_RULES)
    alerter.append("liquidation", liq(key=21))
    await alerter.settle(1)
    assert len(alerter.webhook.requests) == 3  # LIQ_ALERT_MAX_ATTEMPTS
    assert len(alerter.telegram.requests) == 1  # not held up by the failing webhook
    rows = {r["channel"]: r for r in alert_rows(alerter.db)}
    assert (rows["telegram"]["status"], rows["telegram"]["attempts"]) == ("delivered", 1)
    assert (rows["webhook"]["status"], rows["webhook"]["attempts"]) == ("failed", 3)
    assert rows["webhook"]["last_error"].startswith("HTTP 500")
    assert "abc" not in rows["webhook"]["last_error"]


async def test_restart_neither_loses_nor_repeats(alerter: Alerter) -> None:
    rules = LIQ_RULES.replace("cooldown_s = 3600", "cooldown_s = 0")
    await alerter.start(rules)
    for k in (1, 2, 3):
        alerter.append("liquidation", liq(key=k))
    await alerter.settle(3)
    await alerter.stop()
    assert len(alerter.telegram.requests) == 3

    # while it is down: two entries read but never acknowledged (a crash mid-batch), two unread,
    # one a re-sent copy of an event already alerted
    for k in (4, 5):
        alerter.append("liquidation", liq(key=k))
    alerter.redis.xreadgroup(GROUP, "alerter-1", {stream_key(alerter.prefix): ">"}, count=2)
    alerter.append("liquidation", liq(key=6))
    # and two another consumer read and never acknowledged: claimed (XAUTOCLAIM)
    alerter.append("liquidation", liq(key=7))
    alerter.redis.xreadgroup(GROUP, "alerter-2", {stream_key(alerter.prefix): ">"}, count=2)
    alerter.append("liquidation", liq(key=2))
    # and a delivery that was stored but not sent when it stopped
    with psycopg.connect(alerter.db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (rule, kind, key, message, channel) VALUES ('btc-big', 'liquidation', '99', 'hi', 'telegram')"
        )
    await alerter.start(rules)
    await alerter.settle(5)
    await alerter.stop()

    sent = [r.json()["text"] for r in alerter.telegram.requests]
    assert len(sent) == 8 and sent.count("hi") == 1
    keys = sorted(int(r["key"]) for r in alert_rows(alerter.db) if r["channel"] == "telegram")
    assert keys == [1, 2, 3, 4, 5, 6, 7, 99]
    assert all(r["status"] == "delivered" for r in alert_rows(alerter.db))
    pending = alerter.redis.xpending(stream_key(alerter.prefix), GROUP)
    assert pending["pending"] == 0


def test_process_runs_and_stops_on_sigterm(
    alerts_db: str, redis_prefix: str, tmp_path: Path, telegram: FakeHttp, webhook: FakeHttp, sync_redis: redis.Redis
) -> None:
    """`python -m alerter` end to end: alerts from the stream, exit 0 on SIGTERM."""
    rules = tmp_path / "alerts.toml"
    rules.write_text(LIQ_RULES)
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        DATABASE_URL=alerts_db,
        REDIS_URL=service_env()["REDIS_URL"],
        LIQ_REDIS_PREFIX=redis_prefix,
        LIQ_ALERTS_FILE=str(rules),
        LIQ_TELEGRAM_TOKEN="1:x",
        LIQ_TELEGRAM_CHAT_ID="5",
        LIQ_TELEGRAM_API_URL=telegram.url,
        LIQ_WEBHOOK_URL=webhook.url,
        LIQ_ALERTER_METRICS_PORT=str(port := _free_port()),
    )
    sync_redis.xadd(stream_key(redis_prefix), {"kind": "liquidation", "data": json.dumps(liq(key=31))})
    proc = subprocess.Popen(
        [sys.executable, "-m", "alerter"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30  # a cold interpreter on a loaded machine
        while len(telegram.requests) + len(webhook.requests) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "no alert from the process"
            time.sleep(0.05)
        # /metrics: the alert fired on both channels, both delivered (as the `alerts` table says).
        while (m := _scrape(port)).get(("liq_alerts_delivered_total", ())) != 2:
            assert time.monotonic() < deadline, m
            time.sleep(0.05)
        rule = next(r for r in alert_rows(alerts_db))["rule"]
        assert m["liq_alerts_fired_total", (("kind", "liquidation"), ("rule", rule))] == 2
        assert m["liq_alerts_failed_total", ()] == 0 and m["liq_alert_deliveries_in_flight", ()] == 0
        # every alerter series the Grafana dashboard draws exists under that name
        assert {n for n in dashboard_metrics() if n.startswith("liq_alert")} - {name for name, _ in m} == set()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert b"alerter running: 1 rules, channels telegram, webhook" in out
    assert b"1:x" not in out  # the token is never logged
    assert telegram.texts()[0].startswith("LIQUIDATION LONG BTC $200,000.00")


async def test_entries_as_the_collector_encodes_them(alerter: Alerter) -> None:
    """The contract with collector/storage/redis_live.py: common.live_view's stream encoders."""
    rules = LIQ_RULES + '\n[[rule]]\nname = "casc"\nkind = "cascade"\nmin_usd = 100000\n'
    await alerter.start(rules)
    t = now_ms() - 2_000
    ev = Liquidation(
        "okx",
        "BTC-USDT-SWAP",
        Side.SHORT,
        Decimal("1.5"),
        Decimal("90000"),
        Decimal("135000"),
        t,
        t,
        "buy",
        "live",
        True,
    )
    c = Cascade(5, "BTC-USDT-PERP", Side.SHORT, t - 60_000, t, 6, Decimal(3), Decimal(270_000), {"okx": 2, "bybit": 4})
    c.usd = {"okx": Decimal(135_000), "bybit": Decimal(135_000)}
    key = stream_key(alerter.prefix)
    alerter.redis.xadd(key, {"kind": "liquidations", "data": stream_liquidations([ev])})  # one a batch
    e = copy.copy(c)
    e.id, e.symbol = 6, "ETH-USDT-PERP"
    alerter.redis.xadd(key, {"kind": "cascades", "data": stream_cascades([c, e])})  # one a batch, in order
    c.active = False
    alerter.redis.xadd(key, {"kind": "cascades", "data": stream_cascades([c])})
    # what a collector before the batch entries wrote is still read (an upgrade leaves some)
    old = copy.copy(c)
    old.id, old.symbol, old.active = 7, "SOL-USDT-PERP", True
    (single,) = json.loads(stream_cascades([old]))  # the object an older collector wrote alone
    alerter.redis.xadd(key, {"kind": "cascade", "data": json.dumps(single)})
    await alerter.settle(4)
    texts = alerter.telegram.texts()
    assert [t.split("\n")[0] for t in texts] == [
        "LIQUIDATION SHORT BTC $135,000.00",
        "CASCADE STARTED SHORT BTC-USDT-PERP",
        "CASCADE STARTED SHORT ETH-USDT-PERP",
        "CASCADE ENDED SHORT BTC-USDT-PERP",
        "CASCADE STARTED SHORT SOL-USDT-PERP",
    ]
    assert texts[0].split("\n")[2] == "OKX BTC-USDT-SWAP: 1.5000 BTC at $90,000.00 (sampled feed)"
    assert texts[2].split("\n")[3] == "venues: Bybit $135,000.00, OKX $135,000.00 (cross-venue)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_stream_rule_for_a_coin_that_should_not_be_quiet(alerter: Alerter) -> None:
    """`coin = "BTC"` on a stream rule: no candle of BTC on a venue for N minutes is an alert, the
    next candle its recovery; another coin's candles do not count."""
    rules = '[[rule]]\nname = "btc-feed"\nkind = "stream"\ncoin = "BTC"\nvenues = ["okx"]\nminutes = 1\n'
    health = f"{alerter.prefix}live:health"
    alerter.redis.hset(
        health, mapping={"okx": json.dumps({"connected": True, "last_message_age_s": 0.1, "at_ms": now_ms()})}
    )
    minute = now_ms() - now_ms() % 60_000

    def candle(symbol: str, open_ms: int) -> None:
        with psycopg.connect(alerter.db, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO candles (time, exchange, symbol, open, high, low, close, volume, quote_volume, closed)"
                " VALUES (to_timestamp(%s / 1000.0), 'okx', %s, 1, 1, 1, 1, 1, 1, false)",
                (open_ms, symbol),
            )

    candle("BTC-USDT-SWAP", minute - 5 * 60_000)  # BTC's newest candle: 5 minutes old
    candle("ETH-USDT-SWAP", minute)  # ETH flows: it does not make BTC's feed alive
    await alerter.start(rules)
    await until(lambda: len(alerter.telegram.requests) == 1)
    candle("BTC-USDT-SWAP", minute)
    await until(lambda: len(alerter.telegram.requests) == 2, within_s=10)
    await alerter.stop()
    down, up = alerter.telegram.texts()
    assert down.startswith("STREAM DOWN OKX: no candle of BTC for ") and "rule btc-feed" in down
    assert up.startswith("STREAM RECOVERED ") and "BTC" in up.split("\n")[0]
