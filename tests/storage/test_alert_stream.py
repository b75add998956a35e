"""The alerter's Redis Stream: the collector's Redis writer appends liquidations of at least
LIQ_ALERT_STREAM_MIN_USD and every cascade update, in the batch's own round trip."""

from __future__ import annotations

import json
from decimal import Decimal

import redis
from hypothesis import given
from hypothesis import strategies as st

from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch
from common.events import Cascade, Side
from common.live_view import Keys, _stream_cascade_fields, _stream_fields, stream_cascades, stream_liquidations
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


_texts = st.text(max_size=12)  # any text: escapes and other scripts included
_amounts = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**12), places=8)


@given(
    st.lists(
        st.tuples(_texts, _texts, st.sampled_from(list(Side)), _amounts, _amounts, st.integers(0, 2**45), _texts),
        max_size=6,
    )
)
def test_stream_entries_are_the_json_the_alerter_always_read(
    rows: list[tuple[str, str, Side, Decimal, Decimal, int, str]],
) -> None:
    """The entries are written by orjson for speed: the same text as the compact
    `json.dumps(..., ensure_ascii=False)` they were written with before, whatever the strings hold."""
    events = [
        liq(exchange, time_ms, side, str(qty), str(price), symbol, source)
        for exchange, symbol, side, qty, price, time_ms, source in rows
    ]
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    assert stream_liquidations(events) == json.dumps([_stream_fields(ev) for ev in events], **compact)
    cascades = []
    for i, ev in enumerate(events):
        c = Cascade(
            i - 3, ev.symbol, ev.side, ev.time_ms, ev.time_ms + 9, 2, ev.quantity, ev.value_usd, {ev.exchange: 2}
        )
        c.usd, c.source, c.risk_score, c.active = {ev.exchange: ev.value_usd}, ev.source, i * 7, i % 2 == 0
        cascades.append(c)
    assert stream_cascades(cascades) == json.dumps([_stream_cascade_fields(c) for c in cascades], **compact)
