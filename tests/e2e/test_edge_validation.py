"""Edge validation through the whole collector (issue #9, findings 2 and 8): a fake Bybit on
loopback, the real collector service, real Redis and real TimescaleDB.

A liquidation re-sent with its quantity written "0.5", "0.50", "0.500" is one row and one Redis
member ("5E-1" is refused and counted); a NUL character in one item's symbol costs that item only,
while the good items beside it, a non-ASCII symbol among them, are stored in both places.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis

from collector.replay_server import BybitServer
from common.live_view import Keys, decode_liquidation
from tests import services
from tests.storage.factories import now_ms
from tests.storage.helpers import db_count, running_service, wait_until


def _frame(*items: dict[str, Any], ts: int | None = None) -> str:
    """Raw text as the venue sends it; json.dumps writes the NUL as the JSON escape "\\u0000".

    A re-sent push keeps its `ts`: Bybit's dedup key holds the push time and the item's index, so
    the same liquidation in another push is another liquidation (two real twins)."""
    push = now_ms() if ts is None else ts
    return json.dumps({"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": push, "data": list(items)})


def _item(t: int, symbol: str, side: str, size: str, price: str) -> dict[str, Any]:
    return {"T": t, "s": symbol, "S": side, "v": size, "p": price}


def _db_rows(url: str) -> list[tuple[str, str, int, Decimal]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT symbol, side, (extract(epoch FROM time) * 1000)::bigint, quantity FROM liquidations ORDER BY time"
        ).fetchall()
    return [(r[0], r[1], int(r[2]), r[3]) for r in rows]


def _redis_rows(client: redis.Redis, prefix: str) -> list[tuple[str, str, int, Decimal]]:
    members = [decode_liquidation(m) for m in client.zrange(Keys(prefix).liqs, 0, -1)]
    rows = [(m["symbol"], str(m["side"]), m["time_ms"], m["quantity"]) for m in members]
    return sorted(rows, key=lambda r: r[2])


async def test_a_resent_liquidation_is_stored_once_and_a_nul_symbol_costs_only_its_item(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    t = now_ms() - 120_000
    push = now_ms()
    resent = [
        _frame(_item(t, "BTCUSDT", "Buy", size, "97012.50"), ts=push) for size in ("0.5", "0.50", "0.500", "5E-1")
    ]
    mixed = _frame(
        _item(t + 1_000, "ETHUSDT", "Sell", "4.20", "3320.15"),
        _item(t + 2_000, "BTC\x00USDT", "Buy", "1.000", "97000.00"),
        _item(t + 3_000, "币安人生USDT", "Buy", "1200", "0.2139000"),
        _item(t + 4_000, "BTCUSDT", "Sell", "0.004", "97655.00"),
    )
    assert "\\u0000" in mixed
    expected = [
        ("BTCUSDT", "LONG", t, Decimal("0.5")),
        ("ETHUSDT", "SHORT", t + 1_000, Decimal("4.2")),
        ("币安人生USDT", "LONG", t + 3_000, Decimal("1200")),
        ("BTCUSDT", "SHORT", t + 4_000, Decimal("0.004")),
    ]
    async with BybitServer() as bybit:
        settings = services.make_settings(
            clean_db, redis_prefix, tmp_path, LIQ_EXCHANGES="bybit", LIQ_BYBIT_WS_URL=bybit.url
        )
        async with running_service(settings, with_adapters=True) as service:
            await bybit.wait_connected(1, within=30)
            for raw in [*resent, mixed]:
                assert await bybit.push(raw) == 1
            health = service.health["bybit"]
            await wait_until(lambda: sum(health.drops.values()) == 2, what="the two bad items counted")
            await wait_until(lambda: db_count(clean_db) == 4, what="good items in TimescaleDB")
            await wait_until(lambda: sync_redis.zcard(Keys(redis_prefix).liqs) == 4, what="good items in Redis")
            assert health.drops == {"bad_number": 1, "bad_symbol": 1}
            assert health.events == 6  # 0.5, 0.50, 0.500 and three good items of the mixed frame
            assert service.pipeline.invalid_events == 0

        # One liquidation written three ways: one row, one member, one canonical quantity.
        assert _db_rows(clean_db) == expected
        assert _redis_rows(sync_redis, redis_prefix) == expected
        [member] = sync_redis.zrangebyscore(Keys(redis_prefix).liqs, t, t)
        assert '"0.5"' in member.decode() and '"0.50"' not in member.decode()
