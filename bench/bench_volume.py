"""What a tick of the alerter's `volume` rules costs in a violent hour.

    python -m bench.bench_volume [--events 500000] [--symbols 1000] [--ticks 20]

A private Redis prefix at REDIS_URL gets --events liquidations spread over the last 60 minutes
across --symbols venue symbols of five venues (BTC and ETH a third of them), through the
collector's own writer (`RedisLive.write`, batches of 1,000). Then `VolumeReader.sums` runs for four
rules at once (the market over 60 min, BTC longs over 15 min, ETH on two venues over 5 min, a small
coin over 1 min): the first tick (the whole per-symbol key list read), then steady ticks (a count
of the key list, nothing new) while a writer adds 1,000 liquidations a second. Printed: median and
worst time per tick, hashes read, and whether each sum equals the events written.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from decimal import Decimal

import redis.asyncio as aioredis

from alerter.rules import parse_rules
from alerter.volume import VolumeReader
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch
from common.config import load_settings
from common.events import Liquidation, Side
from common.live_view import BUCKET_MS, bucket_of

RULES = parse_rules(
    """
[[rule]]
name = "market-60m"
kind = "volume"
min_usd = 1
minutes = 60

[[rule]]
name = "btc-long-15m"
kind = "volume"
coin = "BTC"
side = "LONG"
min_usd = 1
minutes = 15

[[rule]]
name = "eth-5m"
kind = "volume"
coin = "ETH"
venues = ["binance", "okx"]
min_usd = 1
minutes = 5

[[rule]]
name = "tail-1m"
kind = "volume"
coin = "C77"
min_usd = 1
minutes = 1
"""
)
VENUES = ("binance", "bybit", "okx", "gate", "bitget")


def _symbol(venue: str, coin: str) -> str:
    return {"okx": f"{coin}-USDT-SWAP", "gate": f"{coin}_USDT"}.get(venue, f"{coin}USDT")


def _events(n: int, symbols: int, now: int, rng: random.Random) -> list[Liquidation]:
    coins = ["BTC", "ETH", *(f"C{i}" for i in range(max(1, symbols // len(VENUES) - 2)))]
    out = []
    for _ in range(n):
        coin = rng.choice(coins[:2]) if rng.random() < 0.33 else rng.choice(coins)
        venue = rng.choice(VENUES)
        t = now - rng.randrange(0, 3_590_000)
        qty, price = Decimal(rng.randrange(1, 10**6)).scaleb(-3), Decimal(rng.choice((97000, 3000, 1, "0.0213")))
        side = rng.choice((Side.LONG, Side.SHORT))
        out.append(Liquidation(venue, _symbol(venue, coin), side, qty, price, qty * price, t, t + 3, "x", "live", True))
    return out


def _expected(events: list[Liquidation], now: int) -> dict[str, tuple[Decimal, int]]:
    out = {}
    for rule in RULES:
        start, end = now - int((rule.minutes or 0) * 60_000), bucket_of(now) + BUCKET_MS
        chosen = [
            ev.value_usd
            for ev in events
            if start <= ev.time_ms < end
            and rule.wants_side(str(ev.side))
            and rule.wants_venue(ev.exchange)
            and rule.wants_liquidation(ev.exchange, ev.symbol)
        ]
        out[rule.name] = (sum(chosen, Decimal(0)), len(chosen))
    return out


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    prefix = f"bench-volume-{time.time_ns()}:"
    live = RedisLive(settings.redis_url, prefix)
    await live.open()
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    rng = random.Random(1)
    try:
        now = time.time_ns() // 1_000_000
        events = _events(args.events, args.symbols, now, rng)
        t0 = time.perf_counter()
        for i in range(0, len(events), 1000):
            await live.write(Batch(liquidations=events[i : i + 1000]))
        print(f"filled {len(events):,} liquidations in {time.perf_counter() - t0:.1f} s")
        reader = VolumeReader(client, prefix)
        now = time.time_ns() // 1_000_000
        t0 = time.perf_counter()
        sums = await reader.sums(RULES, now)
        first_ms = (time.perf_counter() - t0) * 1000
        expected = _expected(events, now)
        exact = all((sums[r.name].usd, sums[r.name].events) == expected[r.name] for r in RULES)
        print(f"first tick: {first_ms:.0f} ms, {reader.keys_read:,} hashes read, sums equal the events: {exact}")
        times = []
        for _ in range(args.ticks):
            now = time.time_ns() // 1_000_000
            fresh = _events(1000, args.symbols, now, rng)
            for ev in fresh:
                ev.time_ms = now - rng.randrange(0, 900)
            await live.write(Batch(liquidations=fresh))
            events += fresh
            t0 = time.perf_counter()
            sums = await reader.sums(RULES, now)
            times.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(max(0.0, 1.0 - times[-1] / 1000))
        expected = _expected(events, now)
        exact = all((sums[r.name].usd, sums[r.name].events) == expected[r.name] for r in RULES)
        print(
            f"steady ticks (1,000 new liquidations a second): median {statistics.median(times):.0f} ms, "
            f"worst {max(times):.0f} ms, {reader.keys_read:,} hashes read; sums equal the events: {exact}"
        )
        for rule in RULES:
            s = sums[rule.name]
            print(f"  {rule.name:14} ${s.usd:,.2f} in {s.events:,} liquidations, venues {','.join(s.venues)}")
        return 0 if exact else 1
    finally:
        await live.close()
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=10_000)]
        for i in range(0, len(keys), 10_000):
            await client.delete(*keys[i : i + 10_000])
        await client.aclose()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
