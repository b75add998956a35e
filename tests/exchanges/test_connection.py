"""The reconnecting loop against real local WebSocket servers speaking each venue's protocol."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from typing import Any, ClassVar

import pytest

from collector.exchanges import ADAPTERS, BinanceAdapter, BybitAdapter
from collector.exchanges.connection import Backoff, ExchangeAdapter
from collector.replay_server import BinanceServer, BybitServer, FakeServer, Peer
from common.events import Candle, Liquidation, Side, StreamStatus
from tests.exchanges.harness import Running, adapter_settings, frames

B = frames("binance")
Y = frames("bybit")
SERVERS: dict[str, type[FakeServer]] = {"binance": BinanceServer, "bybit": BybitServer}
# One liquidation frame per venue: Binance order side SELL and Bybit position side Sell, so
# LONG and SHORT respectively.
LIQUIDATION = {"binance": B["force_order_sell"]["data"], "bybit": Y["liquidation_one"]}
SIDE = {"binance": Side.LONG, "bybit": Side.SHORT}


def _running(
    exchange: str, srv: FakeServer, adapter_cls: type[ExchangeAdapter] | None = None, queue_size: int = 1000
) -> Running:
    settings = adapter_settings(**{f"LIQ_{exchange.upper()}_WS_URL": srv.url})
    return Running(adapter_cls or ADAPTERS[exchange], srv.url, settings, queue_size)


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
async def test_events_flow_end_to_end(exchange: str) -> None:
    async with SERVERS[exchange]() as srv, _running(exchange, srv) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        assert await srv.push(LIQUIDATION[exchange]) == 1
        await run.wait_for(lambda: len(run.liquidations()) == 1)
        [liq] = run.liquidations()
        assert (liq.exchange, liq.symbol, liq.side, liq.source) == (exchange, "BTCUSDT", SIDE[exchange], "test")
        assert liq.received_ms >= liq.time_ms
        assert run.health.connected and run.health.connected_since_ms is not None
        assert run.health.events == 1 and run.health.messages >= 1
        [connected] = run.statuses("connected")
        assert connected.connection_id.startswith(f"{exchange}-") and connected.source == "test"
        assert connected.symbols == ("BTCUSDT",)


async def test_bybit_subscribes_in_batches_of_ten() -> None:
    symbols = ",".join(f"C{i:02d}USDT" for i in range(12))
    async with BybitServer() as srv:
        settings = adapter_settings(LIQ_BYBIT_WS_URL=srv.url, LIQ_SYMBOLS=symbols)
        async with Running(BybitAdapter, srv.url, settings) as run:
            peer = await srv.wait_connected(1)
            await run.wait_for(lambda: bool(run.statuses("connected")))
            requests = [json.loads(m) for m in peer.received if '"subscribe"' in m]
            assert [len(r["args"]) for r in requests] == [10, 10, 4]
            assert len(peer.streams) == 24 and "allLiquidation.C11USDT" in peer.streams


@pytest.mark.parametrize(("exchange", "code"), [("binance", 1006), ("bybit", 1011), ("binance", 1001)])
async def test_server_close_reconnects_and_resubscribes(exchange: str, code: int) -> None:
    async with SERVERS[exchange]() as srv, _running(exchange, srv) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        await srv.drop_all(code)
        peer = await srv.wait_connected(2)
        await run.wait_for(lambda: len(run.statuses("connected")) == 2)
        first, second = run.statuses("connected")
        [gone] = run.statuses("disconnected")
        assert gone.connection_id == first.connection_id != second.connection_id
        assert gone.reason == f"server closed {code}"
        assert run.health.reconnects == 1 and run.health.last_error == f"server closed {code}"
        if exchange == "bybit":
            assert peer.streams == {"allLiquidation.BTCUSDT", "kline.1.BTCUSDT"}
        assert await srv.push(LIQUIDATION[exchange]) == 1
        await run.wait_for(lambda: len(run.liquidations()) == 1)


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
async def test_silence_watchdog_closes_and_reconnects(exchange: str) -> None:
    async with SERVERS[exchange]() as srv, _running(exchange, srv) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        srv.silent = True
        await run.wait_for(lambda: bool(run.statuses("disconnected")), within=20)
        assert run.statuses("disconnected")[0].reason == "silence 2s"
        assert run.health.last_error == "silence 2s"
        await srv.wait_for(lambda: srv.accepted >= 2, within=20)
        srv.silent = False
        await run.wait_for(lambda: len(run.statuses("connected")) >= 2, within=20)
        await run.wait_for(lambda: run.health.connected)
        assert await srv.push(LIQUIDATION[exchange]) == 1
        await run.wait_for(lambda: len(run.liquidations()) == 1)


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
async def test_garbage_is_counted_and_the_stream_goes_on(exchange: str) -> None:
    async with SERVERS[exchange]() as srv, _running(exchange, srv) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        for junk in ("{not json", "[]", '{"stream":"x","data":{"e":"mystery"}}', b"\x00\x01binary"):
            assert await srv.push_raw(junk) == 1
        assert await srv.push(LIQUIDATION[exchange]) == 1
        await run.wait_for(lambda: len(run.liquidations()) == 1)
        assert sum(run.health.drops.values()) == 4
        assert run.health.drops["bad_json"] == 3
        assert len(run.statuses("connected")) == 1 and not run.statuses("disconnected")


async def test_a_refused_topic_costs_that_topic_only() -> None:
    """Issue 10 item 4: the refused topic is remembered and shown; its request's other topics are
    sent again without it; the connection and every other symbol carry on."""
    async with BybitServer() as srv:
        srv.refuse = {"kline.1.BTCUSDT"}
        settings = adapter_settings(LIQ_BYBIT_WS_URL=srv.url, LIQ_SYMBOLS="BTCUSDT,ETHUSDT")
        async with Running(BybitAdapter, srv.url, settings) as run:
            peer = await srv.wait_connected(1)
            await run.wait_for(lambda: bool(run.statuses("connected")), within=20)
            assert peer.streams == {"allLiquidation.BTCUSDT", "allLiquidation.ETHUSDT", "kline.1.ETHUSDT"}
            snapshot = run.health.snapshot()
            assert snapshot["refused_topics"] == {"kline.1.BTCUSDT": "Invalid topic :[kline.1.BTCUSDT]"}
            assert snapshot["refusals"] == 1 and snapshot["topics"] == 3 and snapshot["connections"] == 1
            assert await srv.push(Y["liquidation_one"]) == 1
            eth = json.loads(json.dumps(Y["liquidation_one"]).replace("BTCUSDT", "ETHUSDT"))
            assert await srv.push(eth) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 2)
            assert not run.statuses("disconnected") and run.health.reconnects == 0
            # The refused topic is not sent again on this connection, nor after a reconnect.
            await srv.drop_all(None)
            peer = await srv.wait_connected(2, within=20)
            await run.wait_for(lambda: len(run.statuses("connected")) == 2, within=20)
            sent = [t for m in peer.received if '"subscribe"' in m for t in json.loads(m)["args"]]
            assert "kline.1.BTCUSDT" not in sent and len(sent) == 3
            # The next refresh that still lists the symbol sends it once more: refused again, counted.
            assert run.adapter.retry_refused(["BTCUSDT", "ETHUSDT"]) == ["kline.1.BTCUSDT"]
            await run.wait_for(lambda: run.health.refusals == 2)
            assert "kline.1.BTCUSDT" in run.adapter.refused and "kline.1.BTCUSDT" not in peer.streams
            # A delisting and a listing again forgive it too; accepted this time.
            run.adapter.remove_symbols(["BTCUSDT"])
            await run.wait_for(lambda: "allLiquidation.BTCUSDT" not in peer.streams)
            srv.refuse = set()
            run.adapter.add_symbols(["BTCUSDT"])
            await run.wait_for(lambda: "kline.1.BTCUSDT" in peer.streams, within=20)
            assert run.health.snapshot()["refused_topics"] == {} and run.health.snapshot()["topics"] == 4
            assert len(run.statuses("connected")) == 2 and run.health.reconnects == 1


async def test_a_refusal_that_names_no_topic_is_split_until_the_bad_topic_stands_alone() -> None:
    async with _VagueBybit() as srv:
        srv.refuse = {"allLiquidation.C07USDT"}
        symbols = ",".join(f"C{i:02d}USDT" for i in range(12))
        settings = adapter_settings(LIQ_BYBIT_WS_URL=srv.url, LIQ_SYMBOLS=symbols)
        async with Running(BybitAdapter, srv.url, settings) as run:
            peer = await srv.wait_connected(1)
            await run.wait_for(lambda: bool(run.statuses("connected")), within=20)
            assert run.adapter.refused == {"allLiquidation.C07USDT": "request refused"}
            assert len(peer.streams) == 23 and "kline.1.C07USDT" in peer.streams
            requests = [m for m in peer.received if '"subscribe"' in m]
            assert len(requests) <= 3 + 2 * 10  # bounded: at most 2n-1 requests per refused batch of n


class _VagueBybit(BybitServer):
    """Refuses a request holding a refused topic without saying which."""

    async def _on_message(self, peer: Peer, text: str) -> None:
        request = json.loads(text)
        if request.get("op") == "subscribe" and set(request["args"]) & self.refuse:
            reply = {"success": False, "ret_msg": "request refused", "req_id": request["req_id"], "op": "subscribe"}
            await self._send(peer, json.dumps(reply))
            return
        await super()._on_message(peer, text)


async def test_binance_refused_handshake_is_retried() -> None:
    async with BinanceServer() as srv:
        srv.refuse = {"btcusdt@forceOrder"}
        async with _running("binance", srv) as run:
            await run.wait_for(lambda: "400" in run.health.last_error)
            assert not run.statuses()
            srv.refuse = set()
            await srv.wait_connected(1, within=20)
            await run.wait_for(lambda: bool(run.statuses("connected")), within=20)


class _BuggyBinance(BinanceAdapter):
    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        if raw == "boom":
            raise ZeroDivisionError("a parser bug")
        return super().handle(raw, received_ms)


async def test_a_parser_bug_costs_one_frame_not_the_connection() -> None:
    async with BinanceServer() as srv, _running("binance", srv, _BuggyBinance) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        assert await srv.push_raw("boom") == 1
        assert await srv.push(LIQUIDATION["binance"]) == 1
        await run.wait_for(lambda: len(run.liquidations()) == 1)
        assert run.health.drops == {"parse_error": 1}
        assert not run.statuses("disconnected") and srv.accepted == 1


class _FastPingBybit(BybitAdapter):
    ping_interval_s: ClassVar[float | None] = 0.1


async def test_bybit_sends_pings_and_pongs_are_not_data() -> None:
    async with BybitServer() as srv, _running("bybit", srv, _FastPingBybit) as run:
        peer = await srv.wait_connected(1)
        await srv.wait_for(lambda: peer.pings >= 3)
        pings = [json.loads(m) for m in peer.received if '"ping"' in m]
        assert all(p["op"] == "ping" and p["req_id"].startswith("ping-") for p in pings)
        await run.wait_for(lambda: run.health.messages >= 4)  # the ack and the pongs arrived
        assert not run.health.drops and not run.liquidations()


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
async def test_reading_behind_a_backlog_keeps_the_connection_and_every_event(exchange: str) -> None:
    """A burst the collector cannot keep up with: it stops reading (the queue is full), the rest
    waits in the socket, any pong with it. Longer behind than its silence limit and any keepalive
    of its own, it must catch up on the same connection, not cut a live line and lose the backlog
    (a venue's own 10-minute pong deadline is far beyond a few seconds behind)."""
    adapter_cls = ADAPTERS[exchange]
    async with SERVERS[exchange]() as srv, _running(exchange, srv, queue_size=2) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        run.consume = False
        await asyncio.sleep(0.05)
        pushed = 200  # far more than websockets buffers before it pauses reading the socket
        for _ in range(pushed):
            assert await srv.push(LIQUIDATION[exchange]) == 1
        await run.wait_for(lambda: run.queue.full())
        keepalive = (adapter_cls.ws_ping_interval_s or 0) + (adapter_cls.ws_ping_timeout_s or 0)
        await asyncio.sleep(max(run.adapter.settings.silence_timeout_s, keepalive) + 1)
        run.consume = True
        await run.wait_for(lambda: len(run.liquidations()) == pushed, within=20)
        assert not run.statuses("disconnected") and srv.accepted == 1 and run.health.reconnects == 0


class _ShortLivedBybit(BybitAdapter):
    max_lifetime_s: ClassVar[float | None] = 1.0


async def test_a_session_ending_while_its_frame_waits_for_queue_room_queues_the_whole_frame() -> None:
    """The session decides to end (here its lifetime) while the reader still holds a five-event
    frame it could only partly queue: the rest must be queued before the connection closes, not
    lost with a cancelled reader."""
    async with BybitServer() as srv, _running("bybit", srv, _ShortLivedBybit, queue_size=2) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        run.consume = False
        await asyncio.sleep(0.05)
        assert await srv.push(Y["liquidation_five"]) == 1
        await run.wait_for(lambda: run.queue.full())
        await asyncio.sleep(_ShortLivedBybit.max_lifetime_s + 1.5)  # the lifetime passes meanwhile
        run.consume = True
        await run.wait_for(lambda: any(s.reason == "24h rotation" for s in run.statuses("disconnected")))
        assert len({liq.key for liq in run.liquidations()}) == len(run.liquidations()) == 5


async def test_reading_a_busy_feed_sets_no_timer_per_frame() -> None:
    """A timeout around each recv() armed and cancelled a timer per frame: a fifth of the read
    path's CPU (bench.bench_read). The session looks up from reading on a tick instead."""
    async with BinanceServer() as srv, _running("binance", srv) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        loop = asyncio.get_running_loop()
        timers = 0
        call_at = loop.call_at

        def counting(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_at(*args, **kwargs)

        loop.call_at = counting  # type: ignore[method-assign]
        try:
            frames_before = run.health.messages
            for _ in range(10):
                for _ in range(100):
                    await srv.push(B["kline_open"]["data"])
                await asyncio.sleep(0.02)
            await run.wait_for(lambda: run.health.messages >= frames_before + 1000)
        finally:
            del loop.call_at
        assert timers < 50, f"{timers} timers for 1,000 frames"


class _FastBeatBinance(BinanceAdapter):
    heartbeat_interval_s: ClassVar[float] = 0.2


async def test_heartbeats_while_messages_arrive() -> None:
    async with BinanceServer() as srv, _running("binance", srv, _FastBeatBinance) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        for _ in range(400):  # keep messages coming until two heartbeats were sent (at most ~20 s)
            await srv.push(B["kline_open"]["data"])
            if len(run.statuses("heartbeat")) >= 2:
                break
            await asyncio.sleep(0.05)
        beats = run.statuses("heartbeat")
        assert len(beats) >= 2
        assert {b.connection_id for b in beats} == {run.statuses("connected")[0].connection_id}


class _ShortLivedBinance(BinanceAdapter):
    max_lifetime_s: ClassVar[float | None] = 1.0


async def test_binance_rotates_before_the_venue_cuts_the_connection() -> None:
    """Make before break: the successor is connected before the old connection closes."""
    async with BinanceServer() as srv, _running("binance", srv, _ShortLivedBinance) as run:
        await srv.wait_connected(2, within=20)
        await run.wait_for(lambda: len(run.statuses("connected")) >= 2 and bool(run.statuses("disconnected")))
        first, second = run.statuses("connected")[:2]
        [ended] = [s for s in run.statuses("disconnected") if s.connection_id == first.connection_id]
        assert ended.reason == "24h rotation" and second.at_ms <= ended.at_ms
        assert run.health.last_error == "" and run.health.reconnects == 0


async def test_full_queue_applies_backpressure_without_losing_events() -> None:
    async with BybitServer() as srv, _running("bybit", srv, queue_size=2) as run:
        await srv.wait_connected(1)
        await run.wait_for(lambda: bool(run.statuses("connected")))
        run.consume = False
        await asyncio.sleep(0.05)  # let the collector task park
        for _ in range(10):
            assert await srv.push(Y["liquidation_five"]) == 1
        await run.wait_for(lambda: run.queue.full())
        run.consume = True
        await run.wait_for(lambda: len(run.liquidations()) == 50)
        assert not run.health.drops


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
async def test_stop_returns_promptly_with_a_final_disconnected(exchange: str) -> None:
    async with SERVERS[exchange]() as srv:
        run = _running(exchange, srv)
        async with run:
            await srv.wait_connected(1)
            await run.wait_for(lambda: bool(run.statuses("connected")))
            elapsed = await run.stop()
        assert elapsed < 1.0
        last = run.events[-1]
        assert isinstance(last, StreamStatus) and (last.state, last.reason) == ("disconnected", "shutdown")
        assert last.connection_id == run.statuses("connected")[0].connection_id
        assert not run.health.connected
        await srv.wait_for(lambda: not srv.connections)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_endpoint_is_retried_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    url = f"ws://127.0.0.1:{_closed_port()}/v5/public/linear"
    caplog.set_level(logging.WARNING, logger="collector.exchanges")
    async with Running(BybitAdapter, url, adapter_settings(LIQ_BYBIT_WS_URL=url)) as run:
        await run.wait_for(lambda: "retrying in" in caplog.text)
        await run.wait_for(lambda: "ConnectionRefused" in run.health.last_error)
        elapsed = await run.stop()
    assert elapsed < 1.0
    assert run.events == [run.statuses()[0]]
    assert (run.statuses()[0].state, run.statuses()[0].reason) == ("disconnected", "shutdown")


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(7))
    waits = [backoff.next() for _ in range(10)]
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len({round(w / c, 6) for w, c in zip(waits, ceilings, strict=True)}) > 1  # jittered, not fixed
    backoff.reset()
    assert 0.25 <= backoff.next() <= 0.5
