"""Issue 10 at the adapter level, over real local WebSockets: the whole market sharded within each
venue's limits, listings and delistings on open connections, fills counted right, twins kept,
idle feeds kept, make-before-break rotation."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any, ClassVar

from collector.exchanges import BinanceAdapter, BybitAdapter
from collector.exchanges.binance import MAX_STREAMS, URL_BUDGET
from collector.exchanges.bybit import ARGS_CAP
from collector.replay_server import BybitServer
from common.events import Liquidation, Side
from tests.exchanges.harness import Running, adapter_settings, frames
from tests.fakes.ws import WholeMarketBinance

B = frames("binance")


def _symbols(n: int, start: int = 0) -> list[str]:
    return [f"Q{i:04d}USDT" for i in range(start, start + n)]


def _force_order(symbol: str, t: int, **order: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(json.dumps(B["force_order_sell"]["data"]))
    payload["o"].update(s=symbol, T=t, **order)
    return payload


def _kline(symbol: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(json.dumps(B["kline_open"]["data"]))
    payload["s"] = payload["k"]["s"] = symbol
    return payload


def _bybit_liquidations(symbol: str, ts: int, *items: dict[str, Any]) -> dict[str, Any]:
    data = [{"T": ts - 100, "s": symbol, "S": "Buy", "v": "0.5", "p": "100", **item} for item in items]
    return {"topic": f"allLiquidation.{symbol}", "type": "snapshot", "ts": ts, "data": data}


async def test_binance_whole_market_shards_candles_and_takes_liquidations_from_one_stream() -> None:
    symbols = [*_symbols(449), "币安人生USDT"]
    async with WholeMarketBinance() as srv:
        settings = adapter_settings(LIQ_BINANCE_WS_URL=srv.url, LIQ_SYMBOLS="ALL")
        async with Running(BinanceAdapter, srv.url, settings, symbols=symbols) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 4, within=30)
            streams = srv.streams_of_all()
            assert sorted(len(s) for s in streams) == [1, 50, 200, 200]
            assert {"!forceOrder@arr"} in streams
            assert "币安人生usdt@kline_1m" in set().union(*streams)  # lower-cased as Binance expects
            assert all(len(p.ws.request.path) < URL_BUDGET + 100 for p in srv.connections if p.ws.request)
            assert max(len(s) for s in streams) <= MAX_STREAMS
            for i, symbol in enumerate(symbols):
                assert await srv.push(_force_order(symbol, 1732400000000 + i)) == 1  # one connection has it
            await run.wait_for(lambda: len(run.liquidations()) == len(symbols), within=30)
            assert {e.symbol for e in run.liquidations()} == set(symbols)
            assert await srv.push(_kline("Q0448USDT")) == 1
            await run.wait_for(lambda: len(run.candles()) == 1)
            snapshot = run.health.snapshot()
            assert (snapshot["connections"], snapshot["topics"], snapshot["instruments"]) == (4, 451, 450)

            # A listing goes on an open connection with room, a delisting is unsubscribed: no reconnect.
            accepted = srv.accepted
            run.adapter.add_symbols(["QNEWUSDT"])
            await run.wait_for(lambda: any("qnewusdt@kline_1m" in p.streams for p in srv.connections))
            run.adapter.remove_symbols(["Q0000USDT"])
            await run.wait_for(lambda: not any("q0000usdt@kline_1m" in p.streams for p in srv.connections))
            assert srv.accepted == accepted and run.health.reconnects == 0
            assert not run.statuses("disconnected")
            assert await srv.push(_kline("QNEWUSDT")) == 1
            await run.wait_for(lambda: len(run.candles()) == 2)
            subscribes = [json.loads(m) for p in srv.connections for m in p.received if "SUBSCRIBE" in m]
            assert {m["method"] for m in subscribes} == {"SUBSCRIBE", "UNSUBSCRIBE"}


async def test_bybit_whole_market_is_sharded_within_the_args_cap_and_follows_listings() -> None:
    symbols = _symbols(700)
    async with BybitServer() as srv:
        settings = adapter_settings(LIQ_BYBIT_WS_URL=srv.url, LIQ_SYMBOLS="ALL")
        async with Running(BybitAdapter, srv.url, settings, symbols=symbols, queue_size=5000) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2, within=60)
            topics = [p.streams for p in srv.connections]
            assert len(topics) == 2 and sum(len(t) for t in topics) == 1400
            for shard_topics in topics:
                assert len(json.dumps(sorted(shard_topics))) < ARGS_CAP
            for i, symbol in enumerate(symbols):
                assert await srv.push(_bybit_liquidations(symbol, 1732400000500 + i, {})) == 1
            await run.wait_for(lambda: len(run.liquidations()) == len(symbols), within=30)
            assert all(e.side is Side.LONG and e.value_usd == Decimal("50.0") for e in run.liquidations())
            accepted = srv.accepted
            run.adapter.remove_symbols(["Q0001USDT"])
            run.adapter.add_symbols(["QNEWUSDT"])
            await run.wait_for(lambda: any("allLiquidation.QNEWUSDT" in p.streams for p in srv.connections))
            await run.wait_for(lambda: not any("kline.1.Q0001USDT" in p.streams for p in srv.connections))
            assert srv.accepted == accepted and not run.statuses("disconnected")
            assert run.health.snapshot()["topics"] == 1400


async def test_binance_counts_an_expired_partial_fill() -> None:
    """Issue 10 item 5: an IOC liquidation filled in part ends EXPIRED; its fill z counts."""
    async with WholeMarketBinance() as srv:
        settings = adapter_settings(LIQ_BINANCE_WS_URL=srv.url, LIQ_SYMBOLS="BTCUSDT")
        async with Running(BinanceAdapter, srv.url, settings) as run:
            await run.wait_for(lambda: bool(run.statuses("connected")))
            await srv.push(_force_order("BTCUSDT", 1732400000001, X="EXPIRED", q="0.050", z="0.020"))
            await srv.push(_force_order("BTCUSDT", 1732400000002, X="EXPIRED", q="0.050", z="0"))
            await srv.push(_force_order("BTCUSDT", 1732400000003, X="NEW", q="0.050", z="0"))
            await run.wait_for(lambda: sum(run.health.drops.values()) == 2)
            await run.wait_for(lambda: len(run.liquidations()) == 1)
    [liq] = run.liquidations()
    assert (liq.quantity, liq.price, liq.raw_side) == (Decimal("0.02"), Decimal("97354.6"), "SELL")
    assert liq.value_usd == Decimal("0.02") * Decimal("97354.6") and run.health.drops == {"not_filled": 2}


async def test_bybit_usdc_perpetual_twins_and_a_resent_frame() -> None:
    """BTCPERP is valued at par; twins in one frame are two events; the frame re-sent after a
    reconnect gives the same two keys (stored once)."""
    async with BybitServer() as srv:
        settings = adapter_settings(LIQ_BYBIT_WS_URL=srv.url, LIQ_SYMBOLS="BTCPERP,BTCUSDT")
        async with Running(BybitAdapter, srv.url, settings) as run:
            await srv.wait_connected(1)
            await run.wait_for(lambda: bool(run.statuses("connected")))
            twin = {"S": "Sell", "v": "0.25", "p": "97000"}
            frame = _bybit_liquidations("BTCPERP", 1732400000500, twin, twin)
            assert await srv.push(frame) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 2)
            await srv.drop_all(None)
            await srv.wait_connected(2, within=20)
            await run.wait_for(lambda: len(run.statuses("connected")) == 2, within=20)
            assert await srv.push(frame) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 4)
    first, second, again_first, again_second = run.liquidations()
    assert first.key != second.key and (again_first.key, again_second.key) == (first.key, second.key)
    assert (first.symbol, first.side, first.value_usd) == ("BTCPERP", Side.SHORT, Decimal("24250.00"))
    assert not run.health.drops


async def test_an_idle_liquidation_stream_is_kept_alive_by_pongs() -> None:
    """`!forceOrder@arr` may be quiet for minutes: protocol pongs prove it alive, no silence cut."""
    async with WholeMarketBinance() as srv:
        settings = adapter_settings(LIQ_BINANCE_WS_URL=srv.url, LIQ_SYMBOLS="ALL", LIQ_SILENCE_TIMEOUT_S="2")
        async with Running(BinanceAdapter, srv.url, settings, symbols=["BTCUSDT"]) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            # The kline shard is not idle-tolerant; only the liquidation shard is left with nothing.
            run.adapter.remove_symbols(["BTCUSDT"])
            await asyncio.sleep(5)
            assert srv.accepted == 2 and len(srv.connections) == 1
            assert [s.reason for s in run.statuses("disconnected")] == ["no streams"]
            srv.no_pong = True  # now it is dead: the probe goes unanswered
            await run.wait_for(lambda: "silence 2s" in [s.reason for s in run.statuses("disconnected")], within=30)


class _ShortLivedBinance(BinanceAdapter):
    max_lifetime_s: ClassVar[float | None] = 1.5


async def test_binance_rotation_under_load_loses_nothing() -> None:
    """Issue 10 item 6: the successor is subscribed before the old socket closes; every liquidation
    pushed through two rotations arrives (some twice: one key), and coverage has no gap."""
    async with WholeMarketBinance() as srv:
        settings = adapter_settings(LIQ_BINANCE_WS_URL=srv.url, LIQ_SYMBOLS="ALL", LIQ_SILENCE_TIMEOUT_S="30")
        async with Running(_ShortLivedBinance, srv.url, settings, symbols=_symbols(5)) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            pushed = 0
            while len([s for s in run.statuses("disconnected") if s.reason == "24h rotation"]) < 4:
                await srv.push(_force_order("Q0001USDT", 1732400000000 + pushed))
                pushed += 1
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            await run.wait_for(
                lambda: {e.time_ms for e in run.liquidations()} >= {1732400000000 + i for i in range(pushed)}
            )
    keys = {e.time_ms: e.key for e in run.liquidations()}
    assert len(keys) == pushed and len({e.key for e in run.liquidations()}) == pushed
    assert run.health.reconnects == 0 and run.health.last_error == ""
    # Per shard key, each connection connected before its predecessor disconnected.
    events = [s for s in run.statuses() if s.state in ("connected", "disconnected")]
    for ended in [s for s in events if s.reason == "24h rotation"]:
        after = [
            s
            for s in events
            if s.state == "connected" and s.at_ms <= ended.at_ms and s.connection_id != ended.connection_id
        ]
        assert after, "the successor connected before the old connection closed"
    assert all(isinstance(e, Liquidation) for e in run.liquidations())
