"""The alerter's Redis Stream: the collector's Redis writer appends liquidations of at least
LIQ_ALERT_STREAM_MIN_USD and every cascade update, in the batch's own round trip."""

from __future__ import annotations

import json
from decimal import Decimal

import redis

from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch
from common.events import Cascade, Side
from common.live_view import Keys
from tests import services
from tests.storage.factories import liq, now_ms


async def test_big_liquidations_and_cascades_reach_the_stream(redis_prefix: str, sync_redis: redis.Redis) -> None:
    live = RedisLive(services.service_env()["REDIS_URL"], redis_prefix, stream_min_usd=Decimal(10_000))
    await live.open()
    try:
        t = now_ms() - 5_000
        small = liq(time_ms=t, qty="0.1", price="50000")  # $5,000: below the floor
        big = liq("okx", t + 1, Side.SHORT, qty="0.3", price="50000", symbol="BTC-USDT-SWAP")  # $15,000
        cascade = Cascade(
            9, "BTC-USDT-PERP", Side.LONG, t, t + 900, 6, Decimal(3), Decimal(150_000), {"okx": 2, "bybit": 4}
        )
        cascade.usd = {"okx": Decimal(50_000), "bybit": Decimal(100_000)}
        assert await live.write(Batch(liquidations=[small, big], cascades=[cascade]))
        entries = sync_redis.xrange(Keys(redis_prefix).stream)
    finally:
        await live.close()
    kinds = [(fields[b"kind"].decode(), json.loads(fields[b"data"])) for _, fields in entries]
    assert [k for k, _ in kinds] == ["liquidations", "cascades"]  # one entry each for the batch
    (liquidation,), (update,) = kinds[0][1], kinds[1][1]
    assert liquidation == {
        "exchange": "okx",
        "symbol": "BTC-USDT-SWAP",
        "side": "SHORT",
        "quantity": "0.3",
        "price": "50000",
        "value_usd": "15000",
        "time_ms": t + 1,
        "key": str(big.key),
        "source": "test",
        "sampled": False,
    }
    assert update["id"] == "9" and update["symbol"] == "BTC-USDT-PERP" and update["active"] is True
    assert update["usd_by_exchange"] == {"okx": "50000", "bybit": "100000"} and update["cross_exchange"] is True
    assert update["exchanges"] == ["bybit", "okx"] and update["value_usd"] == "150000"
