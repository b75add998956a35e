"""End-to-end pipeline benchmark: queue -> router -> Redis and TimescaleDB, on this machine.

    python -m bench.bench_pipeline [--events 200000] [--rates 1000,10000] [--seconds 10] [--alert-stream off|0|10000]

Runs the real `CollectorService` (without adapters) against a fresh database created on the
server at DATABASE_URL (dropped afterwards) and a private Redis prefix at REDIS_URL, and feeds its
bounded queue directly, the way the adapters do (`await queue.put`), in the same event loop.

1. Throughput: put `--events` liquidations as fast as the queue accepts them; report events/s
   until the last one is committed in TimescaleDB (Redis is written before that).
2. Latency: feed `--rates` events/s in 10 ms ticks for `--seconds`; for each event the time from
   `queue.put` to the end of the Redis pipeline that carried it (the moment a reader sees it):
   p50, p99, max. WebSocket parsing is not included (see bench/bench_parse.py for that).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from collector.service import CollectorService
from collector.storage.spool import Batch
from common.config import Settings, load_settings
from common.events import Liquidation, Side
from db.migrate import migrate

_TICK_S = 0.01


def _make_event(i: int, base_ms: int, received_ms: int) -> Liquidation:
    """Unique and small, both venues and sides, 1 ms apart over the last 50 minutes: dense enough that
    every (symbol, side) turns into one long cascade, so the detector's per-member work is included."""
    exchange = "bybit" if i % 4 else "binance"
    qty = Decimal(f"0.00{i % 9 + 1}")
    price = Decimal(60_000 + i % 5_000) + Decimal(i % 100) / 100
    return Liquidation(
        exchange=exchange,
        symbol=("BTCUSDT", "ETHUSDT", "SOLUSDT")[i % 3],
        side=Side.LONG if i % 2 else Side.SHORT,
        quantity=qty,
        price=price,
        value_usd=qty * price,
        time_ms=base_ms + i % 3_000_000,
        received_ms=received_ms,
        raw_side="Buy",
        source="bench",
        sampled=exchange == "binance",
    )


def create_bench_database(base_url: str) -> str:
    name = f"liq_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(base_url)._replace(path=f"/{name}"))
    migrate(url)
    return url


def drop_bench_database(base_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def _until(condition: Callable[[], bool]) -> None:
    for _ in itertools.count():
        if condition():
            return
        await asyncio.sleep(0.005)


class _Probe:
    """Collects put-to-Redis latencies through the pipeline's after-Redis hook."""

    def __init__(self) -> None:
        self.put_ns: dict[int, int] = {}
        self.latencies_ms: list[float] = []

    def on_redis_batch(self, batch: Batch) -> None:
        done = time.perf_counter_ns()
        for ev in batch.liquidations:
            start = self.put_ns.pop(ev.key, None)
            if start is not None:
                self.latencies_ms.append((done - start) / 1e6)


async def _throughput(settings: Settings, events: int) -> float:
    service = CollectorService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, with_adapters=False))
    await service.ready.wait()
    base = time.time_ns() // 1_000_000 - 3_000_000
    batch = [_make_event(i, base, base) for i in range(events)]  # built before the clock starts
    await asyncio.sleep(1.0)  # let the start-up rebuild and housekeeping finish
    start = time.perf_counter()
    for ev in batch:
        await service.queue.put(ev)
    await _until(lambda: service.db.rows_inserted >= events)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return events / elapsed


async def _latency(settings: Settings, rate: int, seconds: float, offset: int) -> tuple[float, float, float, int]:
    probe = _Probe()
    service = CollectorService(settings, on_redis_batch=probe.on_redis_batch)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, with_adapters=False))
    await service.ready.wait()
    await asyncio.sleep(1.0)
    base = time.time_ns() // 1_000_000 - 3_000_000
    per_tick = max(1, round(rate * _TICK_S))
    ticks = int(seconds / _TICK_S)
    start = time.perf_counter()
    i = offset
    for n in range(ticks):
        for _ in range(per_tick):
            ev = _make_event(i, base, time.time_ns() // 1_000_000)
            probe.put_ns[ev.key] = time.perf_counter_ns()
            await service.queue.put(ev)
            i += 1
        delay = start + (n + 1) * _TICK_S - time.perf_counter()
        await asyncio.sleep(max(0.0, delay))
    await _until(lambda: not probe.put_ns)
    stop.set()
    await task
    lat = sorted(probe.latencies_ms)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return statistics.median(lat), p99, lat[-1], len(lat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--alert-stream",
        default="off",
        help="LIQ_ALERT_STREAM_MIN_USD for the run: off (no stream), or a USD floor (0: every liquidation)",
    )
    args = parser.parse_args()
    base_env = load_settings()
    prefix = f"liqbench:{secrets.token_hex(4)}:"
    url = create_bench_database(base_env.database_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "DATABASE_URL": url,
                "REDIS_URL": base_env.redis_url,
                "LIQ_REDIS_PREFIX": prefix,
                "LIQ_SPOOL_DIR": str(Path(tmp) / "spool"),
                "LIQ_NONLIVE_SOURCE": "bench",
                "LIQ_LOG_LEVEL": "WARNING",
                "LIQ_EXCHANGES": "binance,bybit",
                "LIQ_METRICS_PORT": "0",
                "LIQ_ALERT_STREAM_MIN_USD": args.alert_stream,
            }
            print(f"alert stream: {args.alert_stream}")
            settings = load_settings(env=env, dotenv=None)
            rate = asyncio.run(_throughput(settings, args.events))
            print(f"throughput: {rate:,.0f} events/s sustained ({args.events:,} events, queue -> Redis + TimescaleDB)")
            offset = args.events
            for target in (int(r) for r in args.rates.split(",")):
                p50, p99, worst, n = asyncio.run(_latency(settings, target, args.seconds, offset))
                offset += n
                print(
                    f"latency at {target:,} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms ({n:,} events)"
                )
    finally:
        drop_bench_database(base_env.database_url, url)
        client = redis.Redis.from_url(base_env.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
