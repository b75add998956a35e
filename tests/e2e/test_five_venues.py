"""Issue 11 end to end: all five venues at once (Binance, Bybit, OKX, Gate, Bitget), each a fake REST
instrument list and a fake WebSocket server speaking its own protocol, the real collector service
with LIQ_SYMBOLS=ALL, real TimescaleDB and Redis.

A scripted session: liquidations on every venue, both sides, sizes in each venue's own unit
(contracts on OKX and Gate, quote on Bitget); one disconnect per venue; every frame of the first
half re-sent after the reconnect; garbage frames. It must land exactly (counts, base quantity and
USD per venue and side, in TimescaleDB and in the 60-minute view), and a BTC burst spread over the
venues must make one cross-venue cascade of `BTC-USDT-PERP` listing each venue's share.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis

from collector.replay_server import BybitServer, FakeServer
from tests import services
from tests.fakes.bitget import FakeBitgetRest, FakeBitgetServer, bitget_instrument, liquidation_push
from tests.fakes.gate import FakeGateRest, FakeGateServer, gate_contract
from tests.fakes.okx import FakeOkxRest, FakeOkxServer, okx_instrument
from tests.fakes.rest import FakeBinanceRest, FakeBybitRest, binance_symbol, bybit_instrument
from tests.fakes.ws import WholeMarketBinance
from tests.storage.factories import now_ms
from tests.storage.helpers import db_count, redis_totals, running_service, wait_until

VENUES = ("binance", "bybit", "okx", "gate", "bitget")
Expected = dict[tuple[str, str], tuple[int, Decimal, Decimal]]  # (venue, side) -> (count, base qty, USD)


def _binance(symbol: str, t: int, long: bool, qty: str, price: str) -> dict[str, Any]:
    # `S` is the liquidation ORDER side: SELL closes a long.
    order = {"s": symbol, "S": "SELL" if long else "BUY", "o": "LIMIT", "f": "IOC", "q": qty, "p": price}
    return {"e": "forceOrder", "E": t, "o": {**order, "ap": price, "X": "FILLED", "l": qty, "z": qty, "T": t}}


def _bybit(symbol: str, t: int, long: bool, qty: str, price: str) -> dict[str, Any]:
    # `S` is the POSITION side: Buy = a long liquidated.
    item = {"T": t, "s": symbol, "S": "Buy" if long else "Sell", "v": qty, "p": price}
    return {"topic": f"allLiquidation.{symbol}", "type": "snapshot", "ts": t + 200, "data": [item]}


def _okx(inst_id: str, t: int, long: bool, contracts: str, price: str) -> dict[str, Any]:
    # `side` is the liquidation ORDER side: sell closes a long; posSide `net` must not decide it.
    detail = {"bkLoss": "0", "bkPx": price, "ccy": "", "posSide": "net", "side": "sell" if long else "buy"}
    detail |= {"sz": contracts, "ts": str(t)}
    family = inst_id.rsplit("-", 1)[0]
    item = {"details": [detail], "instFamily": family, "instId": inst_id, "instType": "SWAP", "uly": family}
    return {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [item]}


def _gate(contract: str, t: int, long: bool, contracts: int, price: str) -> dict[str, Any]:
    # A negative size is a sell order: a long liquidated.
    item = {"price": price, "size": -contracts if long else contracts, "time_ms": t, "contract": contract}
    return {
        "channel": "futures.public_liquidates",
        "event": "update",
        "time": t // 1000,
        "time_ms": t,
        "result": [item],
    }


def _bitget(symbol: str, t: int, long: bool, amount: str, price: str) -> dict[str, Any]:
    # `side` is the POSITION side (buy = a long liquidated); `amount` is in the quote coin.
    item = {"symbol": symbol, "side": "buy" if long else "sell", "price": price, "amount": amount, "ts": str(t)}
    return liquidation_push("usdt-futures", t, item)


class Script:
    """Frames per venue with what each must add to the totals once stored."""

    def __init__(self) -> None:
        self.expected: Expected = {}
        self.frames: dict[str, list[dict[str, Any]]] = {v: [] for v in VENUES}

    def add(self, venue: str, frame: dict[str, Any], long: bool, qty: Decimal, usd: Decimal) -> None:
        self.frames[venue].append(frame)
        key = (venue, "LONG" if long else "SHORT")
        n, q, u = self.expected.get(key, (0, Decimal(0), Decimal(0)))
        self.expected[key] = (n + 1, q + qty, u + usd)

    def session(self, t0: int, n: int) -> None:
        """`n` liquidations per venue on its small coin, alternating sides; every size in the venue's unit."""
        for i in range(n):
            t, long = t0 + i * 10, i % 2 == 0
            self.add("binance", _binance("QAAAUSDT", t, long, "2", "10"), long, Decimal(2), Decimal(20))
            self.add("bybit", _bybit("QAAAUSDT", t, long, "3", "10"), long, Decimal(3), Decimal(30))
            # OKX: 4 contracts of 10 QAAA each, at 10 USDT.
            self.add("okx", _okx("QAAA-USDT-SWAP", t, long, "4", "10"), long, Decimal(40), Decimal(400))
            # Gate: 5 contracts of 0.5 QAAA each.
            self.add("gate", _gate("QAAA_USDT", t, long, 5, "10"), long, Decimal("2.5"), Decimal(25))
            # Bitget: 60 USDT at 10 = 6 QAAA.
            self.add("bitget", _bitget("QAAAUSDT", t, long, "60", "10"), long, Decimal(6), Decimal(60))

    def btc_burst(self, t0: int) -> None:
        """Longs liquidated on BTC perpetuals of every venue within a few seconds: about $300,000."""
        for i in range(3):
            t = t0 + i * 1_000
            self.add("binance", _binance("BTCUSDT", t, True, "0.2", "100000"), True, Decimal("0.2"), Decimal(20000))
            self.add("bybit", _bybit("BTCUSDT", t + 1, True, "0.2", "100000"), True, Decimal("0.2"), Decimal(20000))
            # OKX BTC-USDT-SWAP: 20 contracts of 0.01 BTC.
            self.add("okx", _okx("BTC-USDT-SWAP", t + 2, True, "20", "100000"), True, Decimal("0.2"), Decimal(20000))
            # Gate BTC_USDT: 2000 contracts of 0.0001 BTC.
            self.add("gate", _gate("BTC_USDT", t + 3, True, 2000, "100000"), True, Decimal("0.2"), Decimal(20000))
            self.add("bitget", _bitget("BTCUSDT", t + 4, True, "20000", "100000"), True, Decimal("0.2"), Decimal(20000))


def _rests() -> tuple[FakeBinanceRest, FakeBybitRest, FakeOkxRest, FakeGateRest, FakeBitgetRest]:
    coins = ("BTC", "QAAA", "QAAB")
    okx_swaps = [okx_instrument("BTC-USDT-SWAP", "0.01"), *(okx_instrument(f"{c}-USDT-SWAP", "10") for c in coins[1:])]
    gates = [gate_contract("BTC_USDT", "0.0001"), *(gate_contract(f"{c}_USDT", "0.5") for c in coins[1:])]
    return (
        FakeBinanceRest([binance_symbol(f"{c}USDT", c) for c in coins]),
        FakeBybitRest([bybit_instrument(f"{c}USDT", c) for c in coins]),
        FakeOkxRest({"SWAP": okx_swaps, "FUTURES": []}),
        FakeGateRest(gates),
        FakeBitgetRest([bitget_instrument(f"{c}USDT", c) for c in coins]),
    )


async def _deliver(server: FakeServer, frame: dict[str, Any]) -> None:
    """Push until a subscribed connection took it (after a reconnect, the successor must subscribe first)."""
    for _ in range(200):
        if await server.push(frame) >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no connection of {type(server).__name__} subscribed to {json.dumps(frame)[:120]}")


def _db_totals(url: str) -> Expected:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT exchange, side, count(*), sum(quantity), sum(value_usd) FROM liquidations GROUP BY 1, 2"
        ).fetchall()
        (distinct,) = conn.execute("SELECT count(DISTINCT (exchange, event_key)) FROM liquidations").fetchone() or (0,)
        (total,) = conn.execute("SELECT count(*) FROM liquidations").fetchone() or (0,)
    assert distinct == total, "a liquidation was stored twice"
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def _coverage(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT exchange, count(DISTINCT connection_id) FROM stream_coverage GROUP BY 1").fetchall()
    return {r[0]: r[1] for r in rows}


async def test_five_venues_land_exactly_through_disconnects_duplicates_and_garbage(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    binance_rest, bybit_rest, okx_rest, gate_rest, bitget_rest = _rests()
    with binance_rest, bybit_rest, okx_rest, gate_rest, bitget_rest:
        async with (
            WholeMarketBinance() as binance,
            BybitServer() as bybit,
            FakeOkxServer() as okx,
            FakeGateServer() as gate,
            FakeBitgetServer() as bitget,
        ):
            servers: dict[str, FakeServer] = {
                "binance": binance,
                "bybit": bybit,
                "okx": okx,
                "gate": gate,
                "bitget": bitget,
            }
            rests = {"binance": binance_rest, "bybit": bybit_rest, "okx": okx_rest, "gate": gate_rest}
            env = {f"LIQ_{v.upper()}_WS_URL": s.url for v, s in servers.items()}
            env |= {f"LIQ_{v.upper()}_REST_URL": r.url for v, r in rests.items()}
            env["LIQ_BITGET_REST_URL"] = bitget_rest.url
            settings = services.make_settings(
                clean_db, redis_prefix, tmp_path, LIQ_SYMBOLS="ALL", LIQ_EXCHANGES=",".join(VENUES), **env
            )
            assert settings.exchanges == VENUES
            async with running_service(settings, with_adapters=True) as service:
                health = service.health
                await wait_until(lambda: all(health[v].topics > 0 for v in VENUES), what="every venue subscribed")
                for v in VENUES:  # the lists came from REST, with each venue's own contract sizes
                    assert service.catalog is not None and len(service.catalog.instruments(v)) == 3, v
                t0 = now_ms() - 120_000
                first, second = Script(), Script()
                first.session(t0, 6)
                for venue in VENUES:
                    for frame in first.frames[venue]:
                        await _deliver(servers[venue], frame)
                await wait_until(lambda: db_count(clean_db) == 30, what="the first half stored")

                # One disconnect per venue; each reconnects on its own and subscribes again.
                accepted = {v: s.accepted for v, s in servers.items()}
                for server in servers.values():
                    await server.drop_all(1006)
                await wait_until(lambda: all(servers[v].accepted > accepted[v] for v in VENUES), what="reconnects")

                # The second half, the first half re-sent (as venues do after a reconnect), and garbage.
                second.session(t0 + 1_000, 4)
                second.btc_burst(t0 + 60_000)
                for venue in VENUES:
                    server = servers[venue]
                    for frame in [*second.frames[venue], *first.frames[venue]]:
                        await _deliver(server, frame)
                    await server.push_raw("{not json")
                    await server.push_raw(json.dumps({"unexpected": [1, 2, 3]}))
                expected: Expected = {}
                for script in (first, second):
                    for key, (n, q, u) in script.expected.items():
                        n0, q0, u0 = expected.get(key, (0, Decimal(0), Decimal(0)))
                        expected[key] = (n0 + n, q0 + q, u0 + u)
                total = sum(n for n, _, _ in expected.values())
                assert total == 30 + 20 + 15
                await wait_until(lambda: db_count(clean_db) == total, what="every liquidation stored")
                await asyncio.sleep(1.0)  # anything doubled would arrive now
                assert _db_totals(clean_db) == expected

                # The 60-minute view holds the same, per venue and side (USD; counts).
                live = redis_totals(sync_redis, redis_prefix, t0 - 1, t0 + 3_600_000)
                assert live == {k: (n, u) for k, (n, _, u) in expected.items()}

                # Garbage was counted, never stored.
                for venue in VENUES:
                    assert sum(health[venue].snapshot()["drops"].values()) >= 1, venue

                # Coverage: every venue had two connections for its liquidations (before and after the cut).
                coverage = _coverage(clean_db)
                for venue in VENUES:
                    assert coverage.get(venue, 0) >= 2, (venue, coverage)

                # The BTC burst is one cascade across venues under the canonical name, with each venue's share.
                def cascade() -> tuple[Any, ...] | None:
                    with psycopg.connect(clean_db) as conn:
                        return conn.execute(
                            "SELECT symbol, side, events, value_usd, exchanges, usd_by_exchange, quantity"
                            " FROM cascades WHERE symbol = 'BTC-USDT-PERP'"
                        ).fetchone()

                found: Callable[[], bool] = lambda: (c := cascade()) is not None and c[2] == 15  # noqa: E731
                await wait_until(found, what="the cross-venue BTC cascade")
                symbol, side, events, usd, exchanges, shares, quantity = cascade() or ()
                assert (symbol, side, events, usd) == ("BTC-USDT-PERP", "LONG", 15, Decimal(300000))
                assert sorted(exchanges) == sorted(VENUES)
                assert {k: Decimal(v) for k, v in shares.items()} == {v: Decimal(60000) for v in VENUES}
                assert quantity == Decimal(3)  # base BTC, contracts converted once, never twice
