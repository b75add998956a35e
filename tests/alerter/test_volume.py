"""`volume` rules read the live view's exact sums: every liquidation the collector's real Redis
writer stored, once, whatever the alert stream's floor, with the window's edge exact to the ms."""

from __future__ import annotations

import random
from decimal import Decimal

import redis.asyncio as aioredis

from alerter.rules import parse_rules
from alerter.volume import VolumeReader
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch
from common.events import Liquidation, Side
from common.live_view import BUCKET_MS, Keys, bucket_of
from tests import services
from tests.storage.factories import liq, now_ms

RULES = parse_rules(
    """
[[rule]]
name = "market"
kind = "volume"
min_usd = 1
minutes = 60

[[rule]]
name = "btc-long-5m"
kind = "volume"
coin = "BTC"
side = "LONG"
min_usd = 1
minutes = 5

[[rule]]
name = "btc-perp-okx-bybit"
kind = "volume"
contract = "BTC-USDT-PERP"
venues = ["okx", "bybit"]
min_usd = 1
minutes = 2.5

[[rule]]
name = "eth-all-sources"
kind = "volume"
coin = "ETH"
include_nonlive = true
min_usd = 1
minutes = 0.25
"""
)

# venue symbols of BTC, ETH and another coin, as each venue spells them
SYMBOLS = {
    "binance": ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT_261225"),
    "bybit": ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCPERP"),
    "okx": ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP"),
}


def _brute(rule_name: str, events: list[Liquidation], now: int) -> tuple[Decimal, int]:
    (rule,) = [r for r in RULES if r.name == rule_name]
    start = now - int((rule.minutes or 0) * 60_000)
    chosen = [
        ev
        for ev in events
        if start <= ev.time_ms
        and ev.time_ms < bucket_of(now) + BUCKET_MS  # the newest bucket is read whole (in real time: up to now)
        and rule.wants_source(ev.source)
        and rule.wants_side(str(ev.side))
        and rule.wants_venue(ev.exchange)
        and rule.wants_liquidation(ev.exchange, ev.symbol)
    ]
    return sum((ev.value_usd for ev in chosen), Decimal(0)), len(chosen)


async def test_window_sums_equal_the_events_written(redis_prefix: str) -> None:
    rng = random.Random(7)
    base = now_ms() - 50 * 60_000  # the writer keeps the last 62 minutes
    events: list[Liquidation] = []
    for _ in range(1500):
        exchange = rng.choice(sorted(SYMBOLS))
        events.append(
            liq(
                exchange,
                base + rng.randrange(0, 45 * 60_000),
                rng.choice((Side.LONG, Side.SHORT)),
                qty=f"{rng.randrange(1, 10**6)}e-{rng.randrange(0, 6)}",
                price=str(rng.choice(("0.2139", "3000.5", "97000", "150"))),
                symbol=rng.choice(SYMBOLS[exchange]),
                source=rng.choice(("live", "live", "live", "replay")),
            )
        )
    live = RedisLive(services.service_env()["REDIS_URL"], redis_prefix)
    await live.open()
    client = aioredis.Redis.from_url(services.service_env()["REDIS_URL"], decode_responses=True)
    try:
        for i in range(0, len(events), 100):
            assert await live.write(Batch(liquidations=events[i : i + 100]))
        assert await live.write(Batch(liquidations=events[:300]))  # a second collector's copies: counted once
        reader = VolumeReader(client, redis_prefix)
        # several "now"s, so the window's start falls inside a bucket, on its edge, and on an event
        nows = [base + 45 * 60_000 + 1, base + 20 * 60_000 + 3_333, events[17].time_ms + 15_000, base + 45 * 60_000]
        for now in nows:
            sums = await reader.sums(RULES, now)
            for rule in RULES:
                got = sums[rule.name]
                assert (got.usd, got.events) == _brute(rule.name, events, now), (rule.name, now)
                assert got.start_ms == now - int((rule.minutes or 0) * 60_000)
        assert any(s.events for s in sums.values())
        assert sums["market"].venues == ("binance", "bybit", "okx")
        # keys written after the last read, in the newest buckets and late in an old one (a Redis
        # outage), are found at the next tick: the sums stay equal to the events
        later = [
            liq("okx", nows[0] - 1_000, Side.LONG, qty="3", price="97000", symbol="BTC-USDT-SWAP", source="live"),
            liq("bybit", nows[0] - 200_000, Side.LONG, qty="1", price="97000", symbol="BTCPERP", source="live"),
        ]
        await reader.sums(RULES, nows[0])
        assert await live.write(Batch(liquidations=later))
        events += later
        sums = await reader.sums(RULES, nows[0])
        for name in ("btc-perp-okx-bybit", "btc-long-5m"):
            assert (sums[name].usd, sums[name].events) == _brute(name, events, nows[0]), name
    finally:
        await live.close()
        await client.aclose()  # type: ignore[attr-defined]


async def test_an_empty_or_unbuilt_view(redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(services.service_env()["REDIS_URL"], decode_responses=True)
    try:
        reader = VolumeReader(client, redis_prefix)
        assert not await reader.built()
        sums = await reader.sums(RULES, now_ms())
        assert {(s.usd, s.events, s.venues) for s in sums.values()} == {(Decimal(0), 0, ())}
        await client.set(Keys(redis_prefix).built, "1")
        assert await reader.built()
    finally:
        await client.aclose()  # type: ignore[attr-defined]
