"""Live page benchmark: a violent hour, 500,000 liquidations in the 60-minute window.

    python -m bench.bench_live [--events 500000] [--viewers 1,3,10] [--hold 25] [--skip-browser]

1. Fill: a private Redis prefix at REDIS_URL gets --events liquidations spread over the last 60
   minutes through the collector's own writer (`RedisLive.write`, batches of 1,000 as the router
   makes them under load): members plus their bucket sums.
2. Render, server side: the data function (`app.data.live.snapshot`, no cache) and the whole page
   (Streamlit's AppTest running app/main.py, which opens on Live; cache cleared before each run,
   the first run with its imports not counted), each several times.
3. Memory per viewer: a real app server (`streamlit run app/main.py`) on a free loopback port;
   for each N in --viewers, N headless chromium pages (separate browser contexts) open /live and
   stay --hold seconds (two 10-second refreshes or more) while the server's RSS is sampled every
   second; then they leave and the RSS is sampled again, and once more when the server has
   dropped their sessions.

A fresh database (created on the server at DATABASE_URL, dropped afterwards) serves the app's
frame; the live page itself reads Redis only. A thread plays the collector's heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import redis

from bench.bench_pipeline import create_bench_database, drop_bench_database
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch
from common.config import load_settings
from common.events import Liquidation, Side
from common.live_view import WINDOW_MS, Keys

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SYMBOLS = ("BTCUSDT", "BTCUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT")
# Streamlit keeps a closed tab's session for server.disconnectedSessionTTL (120 s by default) in case
# it reconnects; the benchmark's server keeps them 10 s, so "after they leave" fits in minutes.
_SESSION_TTL_S = 10


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _event(i: int, start_ms: int, step_ms: float) -> Liquidation:
    exchange = "bybit" if i % 4 else "binance"
    qty = Decimal(f"0.{i % 997 + 1:03d}")
    price = Decimal(60_000 + i % 5_000) + Decimal(i % 100) / 100
    return Liquidation(
        exchange=exchange,
        symbol=SYMBOLS[i % len(SYMBOLS)],
        side=Side.LONG if i % 3 else Side.SHORT,
        quantity=qty,
        price=price,
        value_usd=qty * price,
        time_ms=start_ms + int(i * step_ms),
        received_ms=start_ms + int(i * step_ms) + 5,
        raw_side="Buy",
        source="live",
        sampled=exchange == "binance",
    )


async def _fill(redis_url: str, prefix: str, events: int) -> float:
    """Write `events` liquidations over the last 60 minutes through RedisLive; seconds taken."""
    live = RedisLive(redis_url, prefix)
    await live.open()
    start_ms = _now_ms() - WINDOW_MS + 30_000
    step = (WINDOW_MS - 60_000) / events
    began = time.perf_counter()
    try:
        for first in range(0, events, 1_000):
            batch = Batch(liquidations=[_event(i, start_ms, step) for i in range(first, min(events, first + 1_000))])
            if not await live.write(batch):
                raise SystemExit("Redis refused the fill")
    finally:
        await live.close()
    return time.perf_counter() - began


def _heartbeat(client: redis.Redis, keys: Keys, stop: threading.Event) -> None:
    while True:
        now = _now_ms()
        state = {
            "heartbeat_ms": now,
            "started_ms": now - 3_600_000,
            "pid": os.getpid(),
            "sources": {"binance": "live", "bybit": "live"},
            "queue": 0,
            "spool": {"pending_events": 0, "bytes": 0, "state": "idle", "error": ""},
            "database": "ok",
            "database_error": "",
            "backpressure": False,
            "quarantined_rows": 0,
            "invalid_events": 0,
        }
        health = {
            e: json.dumps({"exchange": e, "connected": True, "connected_since_ms": now - 7_200_000,
                           "last_message_ms": now - 200, "reconnects": 0, "last_error": "", "drops": {}})
            for e in ("binance", "bybit")
        }  # fmt: skip
        client.hset(keys.collector, "state", json.dumps(state))
        client.hset(keys.health, mapping=health)  # type: ignore[arg-type]
        client.set(keys.built, str(now))
        if stop.wait(1.0):
            return


def _render(env: dict[str, str], repeat: int) -> tuple[list[float], list[float], int]:
    """Milliseconds per data-function call and per AppTest page run, and members read per call."""
    import streamlit.logger

    streamlit.logger.set_log_level("error")  # before the app's modules define their caches
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from app.data.connections import open_redis
    from app.data.live import snapshot
    from app.query import Catalog, Query, symbol_target

    os.environ.update(env)
    client = open_redis(env["REDIS_URL"])
    keys = Keys(env["LIQ_REDIS_PREFIX"])
    data_ms = []
    members = 0
    for _ in range(repeat):
        began = time.perf_counter()
        venues = ("binance", "bybit")
        snap = snapshot(client, keys, Query(target=symbol_target("BTCUSDT", Catalog(), venues), exchanges=venues))
        data_ms.append((time.perf_counter() - began) * 1000)
        members = snap.members_read
    client.close()
    page_ms = []
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.query_params["symbol"] = "BTCUSDT"
    at.run()  # imports and connections, not counted
    for _ in range(repeat):
        st.cache_data.clear()  # the snapshot is read again on every run
        began = time.perf_counter()
        at.run()
        page_ms.append((time.perf_counter() - began) * 1000)
        if at.exception:
            raise SystemExit(f"the page raised: {[e.message for e in at.exception]}")
        shown = [m.value for m in at.metric if m.label == "Liquidations"]
        if not shown:
            raise SystemExit(f"the live page showed no totals: {[e.value for e in at.error]}")
    return data_ms, page_ms, members


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the app server exited")
        time.sleep(0.2)
    raise SystemExit("the app server did not become healthy")


def _viewers(env: dict[str, str], counts: list[int], hold_s: float, log: Path) -> list[tuple[str, float, float]]:
    """(phase, max RSS MB, last RSS MB) for the idle server, each number of viewers, and after each leaves."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, float, float]] = []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "streamlit"), "run", "app/main.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.disconnectedSessionTTL", str(_SESSION_TTL_S)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_healthy(url, proc)
            time.sleep(2)
            rows.append(("server started, no viewer", _rss_mb(proc.pid), _rss_mb(proc.pid)))
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
                try:
                    for n in counts:
                        contexts = [browser.new_context() for _ in range(n)]
                        pages = [c.new_page() for c in contexts]
                        for page in pages:
                            page.goto(f"{url}/live?symbol=BTCUSDT", wait_until="domcontentloaded")
                        for page in pages:
                            page.get_by_test_id("stMetricValue").first.wait_for(timeout=120_000)
                        samples = []
                        until = time.monotonic() + hold_s
                        while time.monotonic() < until:
                            samples.append(_rss_mb(proc.pid))
                            time.sleep(1.0)
                        rows.append((f"{n} viewer(s), {hold_s:.0f} s", max(samples), samples[-1]))
                        for c in contexts:
                            c.close()
                        samples = []
                        for _ in range(15):
                            time.sleep(1.0)
                            samples.append(_rss_mb(proc.pid))
                        rows.append((f"  15 s after the {n} left", max(samples), samples[-1]))
                finally:
                    browser.close()
            time.sleep(_SESSION_TTL_S + 10)
            rows.append((f"all left, sessions dropped ({_SESSION_TTL_S} s TTL)", _rss_mb(proc.pid), _rss_mb(proc.pid)))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--viewers", default="1,3,10")
    parser.add_argument("--hold", type=float, default=25.0, help="seconds each group of viewers stays")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args(argv)
    base = load_settings()
    prefix = f"liqbench:{secrets.token_hex(4)}:"
    keys = Keys(prefix)
    client = redis.Redis.from_url(str(base.redis_url))
    db_url = create_bench_database(str(base.database_url))
    stop = threading.Event()
    beat: threading.Thread | None = None
    try:
        seconds = asyncio.run(_fill(str(base.redis_url), prefix, args.events))
        members = client.zcard(keys.liqs)
        window_mb = sum(len(m) for m in client.zrange(keys.liqs, 0, 9_999)) / 10_000 * members / 1e6
        print(f"fill: {members:,} liquidations in the window (~{window_mb:,.0f} MB of members) through RedisLive "
              f"in {seconds:.1f} s ({args.events / seconds:,.0f} events/s)")  # fmt: skip
        beat = threading.Thread(target=_heartbeat, args=(client, keys, stop), daemon=True)
        beat.start()
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": db_url,
                "LIQ_APP_DATABASE_URL": db_url,
                "REDIS_URL": str(base.redis_url),
                "LIQ_REDIS_PREFIX": prefix,
                "LIQ_SYMBOLS": "BTCUSDT,ETHUSDT,SOLUSDT",
                "LIQ_EXCHANGES": "binance,bybit",
                "LIQ_APP_PASSWORD": "",
                "LIQ_SPOOL_DIR": tmp,
            }
            data_ms, page_ms, read = _render(env, args.repeat)
            print(f"render: data function {statistics.median(data_ms):.0f} ms median, {max(data_ms):.0f} ms max "
                  f"({read:,} raw members read of {members:,}); whole page (AppTest) "
                  f"{statistics.median(page_ms):.0f} ms median, {max(page_ms):.0f} ms max")  # fmt: skip
            if not args.skip_browser:
                counts = [int(n) for n in args.viewers.split(",")]
                for phase, peak, last in _viewers(env, counts, args.hold, Path(tmp) / "server.log"):
                    print(f"memory: {phase:<32} RSS {last:7.0f} MB (peak {peak:.0f} MB)")
    finally:
        stop.set()
        if beat is not None:
            beat.join(timeout=5)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.unlink(key)
        client.close()
        drop_bench_database(str(base.database_url), db_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
