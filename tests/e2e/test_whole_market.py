"""Issue 10 end to end: LIQ_SYMBOLS=ALL with several hundred instruments on both fake venues (REST
lists and WebSocket streams), the real collector service, TimescaleDB and Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from collector.exchanges.binance import BinanceAdapter
from collector.replay_server import BybitServer
from collector.service import CollectorService
from common.config import Settings
from common.live_view import Keys
from tests import services
from tests.fakes.rest import (
    FakeBinanceRest,
    FakeBybitRest,
    binance_market,
    binance_symbol,
    bybit_instrument,
    bybit_market,
)
from tests.fakes.ws import WholeMarketBinance
from tests.storage.factories import now_ms
from tests.storage.helpers import db_count, published_state, wait_until

N_BINANCE, N_BYBIT = 300, 250


class _FastRefresh(CollectorService):
    instruments_refresh_s = 1.0


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[CollectorService]:
    service = _FastRefresh(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, with_adapters=True))
    await asyncio.wait_for(service.ready.wait(), timeout=60)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def _binance_liq(symbol: str, t: int, side: str) -> dict[str, Any]:
    order = {"s": symbol, "S": side, "o": "LIMIT", "f": "IOC", "q": "2", "p": "9", "ap": "10", "X": "FILLED"}
    return {"e": "forceOrder", "E": t, "o": {**order, "l": "2", "z": "2", "T": t}}


def _bybit_liq(symbol: str, t: int, side: str) -> dict[str, Any]:
    item = {"T": t, "s": symbol, "S": side, "v": "3", "p": "10"}
    return {"topic": f"allLiquidation.{symbol}", "type": "snapshot", "ts": t + 200, "data": [item]}


def _rows(url: str) -> dict[tuple[str, str], tuple[str, Decimal]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT exchange, symbol, side, value_usd FROM liquidations").fetchall()
    out = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert len(out) == len(rows), "a liquidation was stored twice"
    return out


def _coverage(url: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT exchange, connection_id, disconnected_at IS NULL FROM stream_coverage ORDER BY connection_id"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_the_whole_market_is_followed_listed_and_delisted_without_reconnects(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    with FakeBinanceRest(binance_market(N_BINANCE)) as binance_rest, FakeBybitRest(bybit_market(N_BYBIT)) as bybit_rest:
        binance_symbols = [s["symbol"] for s in binance_rest.symbols]
        bybit_symbols = [i["symbol"] for i in bybit_rest.instruments]
        async with WholeMarketBinance() as binance, BybitServer() as bybit:
            refused = f"kline.1.{bybit_symbols[5]}"
            bybit.refuse = {refused}  # one topic of one request: the rest carries on
            settings = services.make_settings(
                clean_db,
                redis_prefix,
                tmp_path,
                LIQ_SYMBOLS="ALL",
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BYBIT_WS_URL=bybit.url,
                LIQ_BINANCE_REST_URL=binance_rest.url,
                LIQ_BYBIT_REST_URL=bybit_rest.url,
            )
            async with _service(settings) as service:
                health = service.health
                # Binance: `!forceOrder@arr` alone, then 300 kline streams on two connections; Bybit: one.
                await wait_until(lambda: health["binance"].connections == 3 and health["bybit"].connections == 1)
                await wait_until(lambda: health["binance"].topics == 1 + N_BINANCE, what="binance subscribed")
                await wait_until(lambda: health["bybit"].topics == 2 * N_BYBIT - 1, what="bybit subscribed")

                now = now_ms()
                expected: dict[tuple[str, str], tuple[str, Decimal]] = {}
                for i, symbol in enumerate(binance_symbols):
                    side = "SELL" if i % 2 else "BUY"
                    assert await binance.push(_binance_liq(symbol, now - 60_000 + i, side)) == 1
                    expected["binance", symbol] = ("LONG" if side == "SELL" else "SHORT", Decimal("20"))
                for i, symbol in enumerate(bybit_symbols):
                    side = "Buy" if i % 2 else "Sell"
                    assert await bybit.push(_bybit_liq(symbol, now - 60_000 + i, side)) == 1
                    expected["bybit", symbol] = ("LONG" if side == "Buy" else "SHORT", Decimal("30"))
                await wait_until(lambda: db_count(clean_db) == len(expected), what="every liquidation stored")
                assert _rows(clean_db) == expected

                state = published_state(sync_redis, redis_prefix)
                await wait_until(
                    lambda: (
                        published_state(sync_redis, redis_prefix).get("instruments", {}).get("bybit", {}).get("tracked")
                        == N_BYBIT
                    ),
                    what="instruments published",
                )
                state = published_state(sync_redis, redis_prefix)
                assert state["instruments"]["binance"]["source"] == "rest"

                def published_health() -> dict[str, Any]:
                    return dict(json.loads(sync_redis.hget(Keys(redis_prefix).health, "bybit") or "{}"))

                await wait_until(lambda: published_health().get("topics") == 499, what="health published")
                published = published_health()
                assert (published["connections"], published["topics"], published["instruments"]) == (1, 499, 250)
                assert published["refused_topics"] == {refused: f"Invalid topic :[{refused}]"}
                # Each 1 s refresh sends it once more, refused again: counted, not reconnected.
                assert published["refusals"] >= 1 and health["bybit"].reconnects == 0

                # A listing and a delisting on each venue, picked up at the next refresh.
                accepted = (binance.accepted, bybit.accepted)
                coverage = _coverage(clean_db)
                gone_b, gone_y = binance_symbols[0], bybit_symbols[0]
                binance_rest.symbols = [*binance_rest.symbols[1:], binance_symbol("QNEWUSDT", "QNEW")]
                bybit_rest.instruments = [*bybit_rest.instruments[1:], bybit_instrument("QNEWUSDT", "QNEW")]
                await wait_until(
                    lambda: (
                        "QNEWUSDT" in service.adapters["binance"].symbols
                        and "QNEWUSDT" in service.adapters["bybit"].symbols
                    ),
                    what="the listing followed",
                )
                await wait_until(
                    lambda: (
                        any("allLiquidation.QNEWUSDT" in p.streams for p in bybit.connections)
                        and any("qnewusdt@kline_1m" in p.streams for p in binance.connections)
                    ),
                    what="the listing subscribed",
                )
                await wait_until(
                    lambda: (
                        not any(f"allLiquidation.{gone_y}" in p.streams for p in bybit.connections)
                        and not any(f"{gone_b.lower()}@kline_1m" in p.streams for p in binance.connections)
                    ),
                    what="the delisting unsubscribed",
                )
                assert gone_b not in service.adapters["binance"].symbols
                assert await bybit.push(_bybit_liq("QNEWUSDT", now_ms(), "Buy")) == 1
                assert await binance.push(_binance_liq("QNEWUSDT", now_ms(), "SELL")) == 1
                await wait_until(lambda: db_count(clean_db) == len(expected) + 2, what="the new symbol stored")
                assert (binance.accepted, bybit.accepted) == accepted  # nobody reconnected
                assert health["binance"].reconnects == health["bybit"].reconnects == 0
                assert _coverage(clean_db) == coverage  # the same connections, all still open
                assert all(open_ for _, _, open_ in coverage) and len(coverage) == 4


async def test_binance_rotation_in_the_service_leaves_no_gap_in_coverage(
    clean_db: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: make-before-break rotation end to end. With connections that live 2 s, liquidations
    pushed all along are stored exactly once each, and the stored coverage of the liquidation stream
    (`!forceOrder@arr`) has no hole: each connection opened before its predecessor closed."""
    monkeypatch.setattr(BinanceAdapter, "max_lifetime_s", 2.0)
    with FakeBinanceRest(binance_market(5)) as binance_rest:
        symbols = [s["symbol"] for s in binance_rest.symbols]
        async with WholeMarketBinance() as binance:
            settings = services.make_settings(
                clean_db,
                redis_prefix,
                tmp_path,
                LIQ_SYMBOLS="ALL",
                LIQ_EXCHANGES="binance",
                LIQ_CANDLE_SYMBOLS="NOSUCHUSDT",  # no candle connection: the liquidation stream alone
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BINANCE_REST_URL=binance_rest.url,
            )
            async with _service(settings) as service:
                health = service.health["binance"]
                await wait_until(lambda: health.connections == 1, what="binance connected")
                start, pushed = now_ms() - 30_000, 0
                while len(_rotations(clean_db)) < 3:
                    await binance.push(_binance_liq(symbols[pushed % 5], start + pushed, "SELL"))
                    pushed += 1
                    await asyncio.sleep(0.02)
                for i in range(20):  # and some after the last rotation
                    await binance.push(_binance_liq(symbols[i % 5], start + pushed, "BUY"))
                    pushed += 1
                await wait_until(lambda: db_count(clean_db) == pushed, what="every pushed liquidation stored")
                await asyncio.sleep(1.0)
                assert db_count(clean_db) == pushed  # nothing doubled by the overlap
                assert health.reconnects == 0
    # The connections of `!forceOrder@arr` form a chain of rows: each opened before the last closed.
    with psycopg.connect(clean_db) as conn:
        rows = conn.execute(
            "SELECT symbols, connected_at, coalesce(disconnected_at, last_seen_at) FROM stream_coverage"
            " WHERE exchange = 'binance' ORDER BY connected_at"
        ).fetchall()
    chains: dict[tuple[str, ...], list[tuple[Any, Any]]] = {}
    for symbols_, started, ended in rows:
        chains.setdefault(tuple(symbols_), []).append((started, ended))
    assert len(chains) == 1 and len(rows) >= 4, chains
    for chain in chains.values():
        for (_, ended), (started, _) in itertools.pairwise(chain):
            assert started <= ended, (
                f"a gap in coverage: a connection closed at {ended}, its successor opened at {started}"
            )


def _rotations(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT connection_id FROM stream_coverage WHERE reason = '24h rotation'").fetchall()
    return [r[0] for r in rows]
