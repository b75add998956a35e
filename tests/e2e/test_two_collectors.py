"""Issue 13: two collectors, one record. Two `python -m collector` processes on the same fake venues,
TimescaleDB and Redis; the leader is killed with SIGKILL mid-session and restarted later, then the
new leader is killed in the middle of a cascade the other one must carry on.

Every liquidation must be stored once, the 60-minute view and the rollups must equal the raw rows,
the stored coverage must have no hole (one collector covers while the other is down), a burst
seen by both must make one cascade, not two, and the alerter (reading the stream both collectors
append to) must send each alert once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis

from collector.replay_server import BinanceServer, BybitServer
from common.live_view import Keys
from tests import services
from tests.alerter.fakes import FakeHttp
from tests.e2e.process import collector_env, start_collector
from tests.storage.factories import now_ms
from tests.storage.helpers import ROLLUPS_EQUAL_RAW, db_count, db_totals, redis_totals, wait_until


def _bybit(t: int, long: bool, qty: str, price: str = "100000") -> dict[str, Any]:
    item = {"T": t, "s": "BTCUSDT", "S": "Buy" if long else "Sell", "v": qty, "p": price}
    return {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": t + 100, "data": [item]}


def _binance(t: int, long: bool, qty: str) -> dict[str, Any]:
    order = {"s": "BTCUSDT", "S": "SELL" if long else "BUY", "o": "LIMIT", "f": "IOC", "q": qty, "p": "100"}
    return {"e": "forceOrder", "E": t, "o": {**order, "ap": "100", "X": "FILLED", "l": qty, "z": qty, "T": t}}


def _scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def _start_alerter(env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "alerter"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.terminate()
    code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, _tail(log)


async def test_two_collectors_make_one_record_through_a_sigkill(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    pushed = 0
    t0 = now_ms() - 600_000

    async def push_round(binance: BinanceServer, bybit: BybitServer, peers: int, n: int) -> None:
        """`n` small liquidations on each venue, each reaching `peers` collectors."""
        nonlocal pushed
        for _ in range(n):
            t = t0 + pushed
            assert await binance.push(_binance(t, pushed % 2 == 0, f"0.{pushed + 1:04d}")) == peers
            assert await bybit.push(_bybit(t, pushed % 2 == 1, f"0.{pushed + 1:04d}", "100")) == peers
            pushed += 1
            await asyncio.sleep(0.02)

    rules = tmp_path / "alerts.toml"
    rules.write_text(
        # (the fakes' events are labelled "test", not "live")
        '[[rule]]\nname = "big"\nkind = "liquidation"\nmin_usd = 40000\ncooldown_s = 0\ninclude_nonlive = true\n\n'
        '[[rule]]\nname = "cascades"\nkind = "cascade"\nmin_usd = 100000\ncooldown_s = 0\ninclude_nonlive = true\n'
    )
    hook = FakeHttp()
    alerter_log = tmp_path / "alerter.log"
    alerter_env = {
        **os.environ,
        "PYTHONPATH": str(services.ROOT),
        "DATABASE_URL": clean_db,
        "REDIS_URL": services.service_env()["REDIS_URL"],
        "LIQ_REDIS_PREFIX": redis_prefix,
        "LIQ_ALERTS_FILE": str(rules),
        "LIQ_WEBHOOK_URL": f"{hook.url}/hook",
        "LIQ_ALERTER_METRICS_PORT": "0",
    }
    alerter = _start_alerter(alerter_env, alerter_log, tmp_path)
    async with BinanceServer() as binance, BybitServer() as bybit:
        envs = [
            collector_env(
                clean_db,
                redis_prefix,
                tmp_path / name,
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BYBIT_WS_URL=bybit.url,
                LIQ_BINANCE_REST_URL="http://127.0.0.1:9",  # no instrument lists: the symbol as configured
                LIQ_BYBIT_REST_URL="http://127.0.0.1:9",
            )
            for name in ("a", "b")
        ]
        a = start_collector(envs[0], logs[0])
        await bybit.wait_connected(1, within=60)
        b = start_collector(envs[1], logs[1])
        try:
            await wait_until(lambda: len(bybit.ready_connections) == 2 and len(binance.ready_connections) == 2)
            await wait_until(lambda: "this collector leads" in logs[0].read_text(), what="a leads")
            await push_round(binance, bybit, 2, 20)

            # Coverage is stored at the heartbeat's grain (5 s): once each collector's rows were
            # refreshed after both connected, the leader dies and the other takes over.
            # (heartbeats come with traffic: a little flows until then)
            refreshed = (
                "SELECT bool_and(last_seen_at > (SELECT max(connected_at) FROM stream_coverage))"
                " FROM stream_coverage WHERE disconnected_at IS NULL"
            )

            async def both_refreshed() -> None:
                for _ in range(40):
                    if _scalar(clean_db, refreshed) is True:
                        return
                    await push_round(binance, bybit, 2, 1)
                    await asyncio.sleep(0.5)
                assert _scalar(clean_db, refreshed) is True

            await both_refreshed()
            a.kill()
            await asyncio.to_thread(a.wait, 15)
            await wait_until(lambda: "this collector leads" in logs[1].read_text(), within=30, what="b leads")
            await wait_until(lambda: len(bybit.ready_connections) == 1 and len(binance.ready_connections) == 1)
            await push_round(binance, bybit, 1, 20)
            # A burst begins while B is alone: B (the leader now) names and stores the cascade ...
            burst = t0 + 300_000
            for i in range(6):
                assert await bybit.push(_bybit(burst + i * 500, True, "0.5")) == 1  # $50,000 each
            await wait_until(
                lambda: _scalar(clean_db, "SELECT count(*) FROM cascades WHERE side = 'LONG'") == 1,
                what="the cascade stored",
            )

            # ... A comes back and follows. It sees the rest of the burst, enough for a cascade of its
            # own with another first member: stored by a second writer, it would be a second cascade.
            a = start_collector(envs[0], logs[0])
            await wait_until(lambda: len(bybit.ready_connections) == 2 and len(binance.ready_connections) == 2)
            for i in range(6, 14):
                assert await bybit.push(_bybit(burst + i * 500, True, "0.5")) == 2

            def streamed() -> int:
                entries = sync_redis.xrange(Keys(redis_prefix).stream)
                return sum(len(json.loads(f[b"data"])) for _, f in entries if f[b"kind"] == b"liquidations")

            await wait_until(lambda: streamed() == 6 + 2 * 8, what="both collectors handled the burst so far")
            await both_refreshed()

            # The leader dies mid-burst: A takes over. Its detector holds the burst under its own
            # name; it carries B's stored cascade on instead (one burst, one record).
            b.kill()
            await asyncio.to_thread(b.wait, 15)
            await wait_until(lambda: logs[0].read_text().count("this collector leads") == 2, within=30, what="a leads")
            await wait_until(lambda: len(bybit.ready_connections) == 1 and len(binance.ready_connections) == 1)
            for i in range(14, 18):
                assert await bybit.push(_bybit(burst + i * 500, True, "0.5")) == 1
            expected_burst = 18
            await push_round(binance, bybit, 1, 20)

            total = 2 * pushed + expected_burst
            await wait_until(lambda: db_count(clean_db) == total, what="every liquidation stored once")
            await asyncio.sleep(1.5)  # anything doubled would land now
            assert db_count(clean_db) == total
            assert _scalar(clean_db, "SELECT count(DISTINCT (exchange, event_key)) FROM liquidations") == total
            lo, hi = t0 - 1, now_ms()
            await wait_until(
                lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi),
                what="the 60-minute view equals the raw rows",
            )
            assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True
            (count, usd) = db_totals(clean_db, lo, hi)[("bybit", "LONG")]
            assert count == pushed // 2 + expected_burst and usd > Decimal(400_000)  # every other one, and the burst
            assert _scalar(clean_db, "SELECT count(*) FROM cascades") == 1  # not doubled by the second collector
            await wait_until(
                lambda: _scalar(clean_db, "SELECT events FROM cascades") == expected_burst, what="every member joined"
            )

            # Each alert once: 18 liquidations of $50,000 (8 reached the stream twice) and one cascade start.
            def sent() -> list[tuple[str, str]]:
                return [(r.json()["rule"], r.json()["key"]) for r in hook.requests]

            await wait_until(lambda: len(sent()) >= 19, within=30, what="the alerts sent")
            await asyncio.sleep(1.5)  # a repeat would arrive now
            assert len(sent()) == len(set(sent())) == 19, sent()
            assert sorted({rule for rule, _ in sent()}) == ["big", "cascades"]
            assert sum(1 for rule, _ in sent() if rule == "cascades") == 1
            # ... although the stream holds the 8 events both collectors saw twice.
            assert streamed() == 18 + 8
        finally:
            for proc, log in ((a, logs[0]), (b, logs[1]), (alerter, alerter_log)):
                if proc.poll() is None:
                    await _stop(proc, log)
            hook.close()

    # Coverage is the union of both collectors': from the first connection to the end, no hole.
    with psycopg.connect(clean_db) as conn:
        rows = conn.execute(
            "SELECT exchange, connected_at, coalesce(disconnected_at, last_seen_at) FROM stream_coverage"
            " ORDER BY exchange, connected_at"
        ).fetchall()
    for exchange in ("binance", "bybit"):
        spans = [(s, e) for x, s, e in rows if x == exchange]
        assert len(spans) >= 3, (exchange, spans)  # a, b, and a again
        covered_to = spans[0][1]
        for start, end in spans:
            assert start <= covered_to, f"{exchange}: nobody connected between {covered_to} and {start}"
            covered_to = max(covered_to, end)
