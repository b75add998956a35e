"""Fake Bitget UTA venues: the v3 public WebSocket and the v3 instruments REST API, on 127.0.0.1.

`FakeBitgetServer` (a `collector.replay_server.FakeServer`) serves `/v3/ws/public`: it answers the
text `ping` with the text `pong` (counted in `pings`), acknowledges each arg of
`{"op":"subscribe"|"unsubscribe","args":[...]}` on its own (`{"event":"subscribe","arg":{...},
"connId":...}`), refuses an arg whose topic name is in `refuse` or that it does not know with
`{"event":"error","arg":{...},"code":"30001","msg":"... doesn't exist",...}` (no `arg` when
`error_without_arg` is set), and pushes a frame (dict or text) to the peers subscribed to its `arg`.
Topic names are the adapter's stream strings: `liquidation.usdt-futures`, `kline.usdt-futures.BTCUSDT`
(a kline of another interval is `kline.usdt-futures.BTCUSDT.5m`). Text without an `arg` goes to
every peer.

`FakeBitgetRest` (a `tests.fakes.rest.FakeRest`) serves `GET /api/v3/market/instruments?category=...`
with the items of `instruments` whose `category` matches; modes as FakeRest ("venue_error": Bitget's
own `{"code":"40034",...}` answer with HTTP 200). `bitget_instrument()` builds one item with every
field the real one has (Bitget UTA "Get Instruments", futures); `bitget_market()` many.
"""

from __future__ import annotations

import json
import re
from typing import Any

from collector.replay_server import FakeServer, Peer
from tests.fakes.rest import SERVER_TIME_MS, FakeRest, coins

BITGET_PATH = "/v3/ws/public"
_INST_TYPES = ("usdt-futures", "usdc-futures", "coin-futures", "spot")
_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1H", "4H", "6H", "12H", "1D")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,24}$")


def topic_of(arg: Any) -> str | None:
    """The topic name of a subscription arg, or None when it is not an object with the usual keys."""
    if not isinstance(arg, dict):
        return None
    inst_type, topic, symbol, interval = arg.get("instType"), arg.get("topic"), arg.get("symbol"), arg.get("interval")
    if not isinstance(inst_type, str) or not isinstance(topic, str):
        return None
    if topic == "liquidation":
        return f"liquidation.{inst_type}"
    name = f"{topic}.{inst_type}.{symbol}"
    return name if interval in (None, "1m") else f"{name}.{interval}"


def _known(arg: dict[str, Any]) -> bool:
    if arg.get("instType") not in _INST_TYPES:
        return False
    if arg.get("topic") == "liquidation":
        return arg.get("instType") != "spot"
    symbol = arg.get("symbol")
    if arg.get("topic") != "kline" or not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        return False
    return arg.get("interval") in _INTERVALS


class FakeBitgetServer(FakeServer):
    """Bitget UTA public WebSocket: per-arg acks and refusals, text ping/pong, routing by `arg`."""

    path = BITGET_PATH

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_without_arg = False

    def _ready(self, peer: Peer) -> bool:
        return bool(peer.streams)

    def _route(self, frame: str | dict[str, Any], peer: Peer) -> str | None:
        if isinstance(frame, dict):
            obj: Any = frame
            text = json.dumps(frame, separators=(",", ":"))
        else:
            text = frame
            try:
                obj = json.loads(frame)
            except ValueError:
                return text
        topic = topic_of(obj.get("arg")) if isinstance(obj, dict) else None
        if topic is None:
            return text
        return text if topic in peer.streams else None

    async def _on_message(self, peer: Peer, text: str) -> None:
        if text == "ping":
            peer.pings += 1
            self.pings += 1
            if not self.silent:
                await self._send(peer, "pong")
            return
        try:
            request = json.loads(text)
        except ValueError:
            return
        if self.silent or not isinstance(request, dict):
            return
        op, args = request.get("op"), request.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            await self._send(peer, self._error(None, "30002", f"op {op!r} or args invalid", peer))
            return
        for arg in args:
            topic = topic_of(arg)
            if topic is None or topic in self.refuse or not _known(arg):
                message = f"instType:{arg.get('instType')},topic:{arg.get('topic')},symbol:{arg.get('symbol')}"
                await self._send(peer, self._error(arg, "30001", f"{message} doesn't exist", peer))
                continue
            if op == "subscribe":
                peer.streams.add(topic)
            else:
                peer.streams.discard(topic)
            await self._send(peer, json.dumps({"event": op, "arg": arg, "connId": peer.conn_id}))

    def _error(self, arg: Any, code: str, msg: str, peer: Peer) -> str:
        body: dict[str, Any] = {"event": "error", "code": code, "msg": msg, "connId": peer.conn_id}
        if arg is not None and not self.error_without_arg:
            body["arg"] = arg
        return json.dumps(body)


def liquidation_push(inst_type: str, ts: int, *items: dict[str, Any]) -> dict[str, Any]:
    """A liquidation push as Bitget sends it (Bitget UTA "Liquidation Channel")."""
    return {"data": list(items), "arg": {"instType": inst_type, "topic": "liquidation"}, "action": "update", "ts": ts}


def kline_push(symbol: str, ts: int, *items: dict[str, Any], inst_type: str = "usdt-futures") -> dict[str, Any]:
    arg = {"instType": inst_type, "symbol": symbol, "topic": "kline", "interval": "1m"}
    return {"data": list(items), "arg": arg, "action": "snapshot", "ts": ts}


class FakeBitgetRest(FakeRest):
    def __init__(self, instruments: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.instruments: list[Any] = list(instruments or [])

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path != "/api/v3/market/instruments":
            return 404, {"code": "40404", "msg": "Request URL NOT FOUND", "requestTime": SERVER_TIME_MS, "data": None}
        category = query.get("category")
        if category not in ("SPOT", "MARGIN", "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES"):
            return 400, _error("40034", "Parameter category does not exist")
        items = [i for i in self.instruments if not isinstance(i, dict) or i.get("category") == category]
        return 200, {"code": "00000", "msg": "success", "requestTime": SERVER_TIME_MS, "data": items}

    def venue_error(self) -> tuple[int, Any]:
        return 200, _error("40808", "Too many requests, please try again later")


def _error(code: str, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg, "requestTime": SERVER_TIME_MS, "data": None}


def bitget_instrument(
    symbol: str,
    base: str,
    quote: str = "USDT",
    *,
    kind: str = "perpetual",
    status: str = "online",
    delivery_ms: int | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """One item of the instruments answer's `data` (a futures category), with every field the real one has."""
    return {
        "symbol": symbol,
        "category": category or f"{quote}-FUTURES",
        "baseCoin": base,
        "quoteCoin": quote,
        "isRwa": "NO",
        "isReality": "no",
        "buyLimitPriceRatio": "0.05",
        "sellLimitPriceRatio": "0.05",
        "feeRateUpRatio": "0.005",
        "makerFeeRate": "0.0002",
        "takerFeeRate": "0.0006",
        "openCostUpRatio": "0.01",
        "minOrderQty": "0.0001",
        "maxOrderQty": "1200",
        "pricePrecision": "1",
        "quantityPrecision": "4",
        "quotePrecision": "",
        "priceMultiplier": "0.1",
        "quantityMultiplier": "0.0001",
        "type": kind,
        "minOrderAmount": "5",
        "maxSymbolOrderNum": "",
        "maxProductOrderNum": "400",
        "maxPositionNum": "200",
        "status": status,
        "offTime": "-1",
        "limitOpenTime": "-1",
        "deliveryTime": "" if delivery_ms is None else str(delivery_ms),
        "deliveryStartTime": "",
        "deliveryPeriod": "" if delivery_ms is None else "this_quarter",
        "launchTime": "0",
        "fundInterval": "8",
        "minLeverage": "1",
        "maxLeverage": "150",
        "maintainTime": "",
        "symbolType": "crypto",
        "maxMarketOrderQty": "220",
    }


def bitget_market(n: int, start: int = 0) -> list[dict[str, Any]]:
    """`n` USDT perpetuals: QAAAUSDT, QAABUSDT, ..."""
    return [bitget_instrument(f"{c}USDT", c) for c in coins(n, start)]
