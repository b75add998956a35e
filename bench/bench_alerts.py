"""Alert latency end to end: a frame reaching the collector -> the fake Telegram receiving the message.

    python -m bench.bench_alerts [--rate 1000 --seconds 30 --alert-every 20]

Runs, against a fresh database on the server at DATABASE_URL (dropped afterwards) and a private
Redis prefix: a fake Bybit WebSocket server and a fake Telegram Bot API in this process, the real
collector (`python -m collector`, LIQ_ALERT_STREAM_MIN_USD=10000) and the real alerter
(`python -m alerter`, one rule: every liquidation of at least $10,000, no cooldown) as
subprocesses, the way supervisord runs them. It pushes `--rate` liquidations a second for
`--seconds` (Bybit frames of 10 items, 100 ms apart); every `--alert-every`-th one is worth $20,000 +
its number (the others $100), so each message names its liquidation by its USD value.

Latency of an alert = the fake Telegram's receive time - the time its frame was written to the
collector's socket, both on this process's clock. Printed: p50, p99, max, and alerts received vs
expected (each must arrive once). Target: p99 <= 1 s at 1,000 liquidations a second. The cost of
the stream to the collector's throughput: `python -m bench.bench_pipeline --alert-stream off` vs
`--alert-stream 0` (every liquidation appended).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from bench.bench_pipeline import create_bench_database, drop_bench_database
from collector.replay_server import BybitServer
from common.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
_USD = re.compile(r"\$([\d,]+\.\d\d)")


class FakeTelegram:
    """`sendMessage` answered 200; every message recorded with its receive time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.monotonic()
                with fake._lock:
                    fake.received.append((at, json.loads(body).get("text", "")))
                reply = b'{"ok":true,"result":{}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _run(args: argparse.Namespace, db_url: str, redis_url: str, prefix: str, tmp: Path) -> None:
    telegram = FakeTelegram()
    rules = tmp / "alerts.toml"
    rules.write_text(
        '[[rule]]\nname = "big"\nkind = "liquidation"\nmin_usd = 10000\ncooldown_s = 0\ninclude_nonlive = true\n'
    )
    common = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    common |= {"LIQ_REDIS_PREFIX": prefix, "LIQ_LOG_LEVEL": "WARNING"}
    pushed: dict[str, float] = {}  # USD text -> when its frame was written
    async with BybitServer() as bybit:
        collector = _start(
            "collector",
            common
            | {
                "LIQ_EXCHANGES": "bybit",
                "LIQ_SYMBOLS": "BTCUSDT",
                "LIQ_BYBIT_WS_URL": bybit.url,
                "LIQ_BYBIT_REST_URL": "http://127.0.0.1:9",
                "LIQ_SPOOL_DIR": str(tmp / "spool"),
                "LIQ_NONLIVE_SOURCE": "bench",
                "LIQ_METRICS_PORT": "0",
                "LIQ_ALERT_STREAM_MIN_USD": "10000",
            },
            tmp / "collector.log",
        )
        alerter = _start(
            "alerter",
            common
            | {
                "LIQ_ALERTS_FILE": str(rules),
                "LIQ_TELEGRAM_TOKEN": "1:bench",
                "LIQ_TELEGRAM_CHAT_ID": "7",
                "LIQ_TELEGRAM_API_URL": telegram.url,
                "LIQ_ALERTER_METRICS_PORT": "0",
                "LIQ_ALERT_CONCURRENCY": "16",
            },
            tmp / "alerter.log",
        )
        try:
            await bybit.wait_connected(1, within=60)
            await asyncio.sleep(2.0)  # the alerter's group is created, the collector's start-up reads are done
            per_frame = 10
            frames = int(args.rate * args.seconds / per_frame)
            interval = per_frame / args.rate
            base_ms = int(time.time() * 1000) - 60_000
            start = time.monotonic()
            seq = 0
            for f in range(frames):
                items: list[dict[str, Any]] = []
                values: list[str] = []
                for _ in range(per_frame):
                    big = seq % args.alert_every == 0
                    usd = 20_000 + seq if big else 100
                    items.append(
                        {"T": base_ms + seq, "s": "BTCUSDT", "S": "Buy", "v": f"{usd / 1000:.3f}", "p": "1000"}
                    )
                    if big:
                        values.append(f"{usd:,}.00")
                    seq += 1
                frame = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": base_ms + seq, "data": items}
                await bybit.push(frame)
                written = time.monotonic()
                for usd_text in values:
                    pushed[usd_text] = written
                delay = start + (f + 1) * interval - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
            sent_s = time.monotonic() - start
            for _ in range(300):  # up to 30 s for the last alerts
                if len(telegram.received) >= len(pushed):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a repeat would arrive now
        finally:
            _stop(alerter)
            _stop(collector)
            telegram.close()
    latencies, seen = [], []
    for at, text in telegram.received:
        m = _USD.search(text)
        if m is not None and m.group(1) in pushed:
            seen.append(m.group(1))
            latencies.append((at - pushed[m.group(1)]) * 1000)
    latencies.sort()
    print(
        f"pushed {seq:,} liquidations in {sent_s:.1f} s ({seq / sent_s:,.0f}/s), {len(pushed):,} of them alerting; "
        f"messages received {len(telegram.received):,}, distinct {len(set(seen)):,}, repeats {len(seen) - len(set(seen))}"
    )
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"alert latency (frame written -> Telegram received): p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms  [target p99 <= 1000 ms]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="liquidations pushed a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--alert-every", type=int, default=20, help="one liquidation in N alerts")
    args = parser.parse_args()
    base = load_settings()
    prefix = f"liqbench:{secrets.token_hex(4)}:"
    url = create_bench_database(str(base.database_url))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_run(args, url, str(base.redis_url), prefix, Path(tmp)))
    finally:
        drop_bench_database(str(base.database_url), url)
        client = redis.Redis.from_url(str(base.redis_url))
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
