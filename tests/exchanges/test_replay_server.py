"""The fake exchanges themselves, driven by a plain websockets client: protocol details others rely on."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from collector.replay_server import BinanceServer, BybitServer
from tests.exchanges.harness import frames

B = frames("binance")
Y = frames("bybit")


async def _recv_json(ws: ClientConnection) -> dict[str, object]:
    result: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return result


async def test_binance_combined_stream_wraps_and_filters() -> None:
    async with BinanceServer() as srv:
        assert srv.url.startswith("ws://127.0.0.1:") and srv.url.endswith("/market")
        async with connect(f"{srv.url}/stream?streams=btcusdt@forceOrder") as ws:
            await srv.wait_connected(1)
            assert await srv.push(B["kline_open"]["data"]) == 0  # not subscribed
            assert await srv.push(B["force_order_eth"]) == 0  # other symbol, already wrapped
            assert await srv.push(B["force_order_sell"]["data"]) == 1
            assert await _recv_json(ws) == B["force_order_sell"]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7}))
            assert await _recv_json(ws) == {"result": None, "id": 7}
            assert await srv.push(json.dumps(B["kline_open"])) == 1
            assert await _recv_json(ws) == B["kline_open"]


async def test_binance_raw_stream_sends_bare_payloads() -> None:
    async with BinanceServer() as srv, connect(f"{srv.url}/ws/btcusdt@forceOrder") as ws:
        await srv.wait_connected(1)
        assert await srv.push(B["force_order_sell"]) == 1
        assert await _recv_json(ws) == B["force_order_sell"]["data"]


async def test_binance_rejects_unknown_paths_and_refused_streams() -> None:
    async with BinanceServer() as srv:
        with pytest.raises(InvalidStatus, match="404"):
            async with connect(f"{srv.url}/nowhere"):
                pass
        srv.refuse = {"btcusdt@forceOrder"}
        with pytest.raises(InvalidStatus, match="400"):
            async with connect(f"{srv.url}/stream?streams=btcusdt@forceOrder"):
                pass
        assert srv.accepted == 0


async def test_bybit_acks_pongs_and_routes_topics() -> None:
    async with BybitServer() as srv, connect(srv.url) as ws:
        await ws.send(json.dumps({"req_id": "s1", "op": "subscribe", "args": ["allLiquidation.BTCUSDT"]}))
        ack = await _recv_json(ws)
        assert (ack["success"], ack["op"], ack["req_id"], ack["ret_msg"]) == (True, "subscribe", "s1", "")
        await ws.send(json.dumps({"req_id": "s2", "op": "subscribe", "args": ["kline.1.BTCUSDT", "bogus.topic"]}))
        refused = await _recv_json(ws)
        assert (refused["success"], refused["ret_msg"]) == (False, "Invalid topic :[bogus.topic]")
        await ws.send(json.dumps({"req_id": "p1", "op": "ping"}))
        pong = await _recv_json(ws)
        assert (pong["ret_msg"], pong["op"], pong["req_id"]) == ("pong", "ping", "p1")
        assert pong["conn_id"] == ack["conn_id"]
        peer = await srv.wait_connected(1)
        assert peer.streams == {"allLiquidation.BTCUSDT"} and srv.pings == 1
        assert await srv.push(Y["kline_open"]) == 0  # refused topic: nothing of that request subscribed
        assert await srv.push(Y["liquidation_two"]) == 1
        assert await _recv_json(ws) == Y["liquidation_two"]


async def test_bybit_silent_server_answers_nothing() -> None:
    async with BybitServer() as srv, connect(srv.url) as ws:
        srv.silent = True
        await ws.send(json.dumps({"req_id": "p1", "op": "ping"}))
        await ws.send(json.dumps({"req_id": "s1", "op": "subscribe", "args": ["allLiquidation.BTCUSDT"]}))
        await srv.wait_for(lambda: srv.pings == 1 and len(srv.connections[0].received) == 2)
        assert await srv.push_raw("anything") == 0
        srv.silent = False
        assert await srv.push_raw("hello") == 1
        assert await asyncio.wait_for(ws.recv(), 10) == "hello"  # nothing was queued before it
