"""Fake Gate USDT futures: a WebSocket server (`FakeGateServer`) and the contracts REST list (`FakeGateRest`).

`FakeGateServer` serves `/v4/ws/usdt` on 127.0.0.1 like Gate's Futures WebSocket v4: it answers
`{"time", "channel", "event": "subscribe"|"unsubscribe", "payload", "id"}` with
`{"time", "time_ms", "id", "channel", "event", "result": {"status": "success"}}`, or with an `error`
object `{"code": 2, "message": "unknown contract NOPE_USDT"}` (and `result` null) when a contract of
the payload is in `refuse` (then nothing of that request is subscribed); `futures.ping` gets a
`futures.pong`. Peers' streams are kept as the adapter spells them: `futures.public_liquidates.!all`,
`futures.public_liquidates.BTC_USDT`, `futures.candlesticks.1m.BTC_USDT`. `push()` routes a
futures.public_liquidates update item by item (a peer gets the items of the contracts it follows,
or all of them with `!all`) and a candlestick update by its `n`; other text goes to every peer.

`FakeGateRest` serves `GET /api/v4/futures/usdt/contracts` with `limit` (1..`max_limit`, default
100) and `offset`, items built by `gate_contract()`; `ignore_offset` plays a server that always sends
the first page. Modes as `tests.fakes.rest.FakeRest` ("venue_error": HTTP 400 with Gate's
`{"label", "message"}`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from collector.replay_server import FakeServer, Peer
from tests.fakes.rest import FakeRest, coins

GATE_PATH = "/v4/ws/usdt"
LIQUIDATIONS = "futures.public_liquidates"
CANDLES = "futures.candlesticks"


class FakeGateServer(FakeServer):
    path = GATE_PATH

    def _ready(self, peer: Peer) -> bool:
        return bool(peer.streams)

    @staticmethod
    def _streams(channel: str, payload: list[str]) -> list[str] | None:
        if channel == LIQUIDATIONS and payload:
            return [f"{LIQUIDATIONS}.{c}" for c in payload]
        if channel == CANDLES and len(payload) == 2:
            return [f"{CANDLES}.{payload[0]}.{payload[1]}"]
        return None

    async def _on_message(self, peer: Peer, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            return
        if not isinstance(request, dict) or self.silent:
            if isinstance(request, dict) and request.get("channel") == "futures.ping":
                peer.pings += 1
                self.pings += 1
            return
        channel, event = request.get("channel"), request.get("event")
        if channel == "futures.ping":
            peer.pings += 1
            self.pings += 1
            await self._send(peer, _reply("futures.pong", "", None, None))
            return
        if event not in ("subscribe", "unsubscribe") or not isinstance(channel, str):
            return
        raw_payload = request.get("payload")
        payload = [p for p in raw_payload if isinstance(p, str)] if isinstance(raw_payload, list) else []
        streams = self._streams(channel, payload)
        if streams is None:
            await self._send(peer, _reply(channel, event, None, {"code": 2, "message": "invalid argument"}, request))
            return
        contracts = payload if channel == LIQUIDATIONS else payload[1:]
        bad = [c for c in contracts if c in self.refuse] + [s for s in streams if s in self.refuse]
        if bad and event == "subscribe":
            error = {"code": 2, "message": f"unknown contract {', '.join(bad)}"}
            await self._send(peer, _reply(channel, event, None, error, request))
            return
        if event == "subscribe":
            peer.streams |= set(streams)
        else:
            peer.streams -= set(streams)
        await self._send(peer, _reply(channel, event, {"status": "success"}, None, request))

    def _route(self, frame: str | dict[str, Any], peer: Peer) -> str | None:
        text = frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":"))
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        if not isinstance(obj, dict) or obj.get("event") != "update" or not isinstance(obj.get("result"), list):
            return text
        channel = obj.get("channel")
        if channel == LIQUIDATIONS:
            everything = f"{LIQUIDATIONS}.!all" in peer.streams
            items = [
                i
                for i in obj["result"]
                if everything or (isinstance(i, dict) and f"{LIQUIDATIONS}.{i.get('contract')}" in peer.streams)
            ]
            if not items:
                return None
            return json.dumps({**obj, "result": items}, separators=(",", ":"))
        if channel == CANDLES:
            names = {i.get("n") for i in obj["result"] if isinstance(i, dict)}
            wanted = {f"{CANDLES}.{str(n).replace('_', '.', 1)}" for n in names}
            return text if wanted & peer.streams else None
        return text

    def streams_of_all(self) -> list[set[str]]:
        return [set(p.streams) for p in self.connections]


def _reply(
    channel: str, event: str, result: Any, error: dict[str, Any] | None, request: dict[str, Any] | None = None
) -> str:
    now = time.time()
    body: dict[str, Any] = {"time": int(now), "time_ms": int(now * 1000)}
    if request is not None and "id" in request:
        body["id"] = request["id"]
    body.update(channel=channel, event=event)
    if error is not None:
        body["error"] = error
    body["result"] = result
    return json.dumps(body, separators=(",", ":"))


class FakeGateRest(FakeRest):
    def __init__(self, contracts: list[dict[str, Any]] | None = None, max_limit: int = 1000) -> None:
        super().__init__()
        self.contracts: list[Any] = list(contracts or [])
        self.max_limit = max_limit
        self.ignore_offset = False

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path != "/api/v4/futures/usdt/contracts":
            return 404, {"label": "NOT_FOUND", "message": "Not Found"}
        try:
            limit = int(query.get("limit", "100"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            return 400, {"label": "INVALID_PARAM_VALUE", "message": "invalid limit or offset"}
        if not 1 <= limit or offset < 0:
            return 400, {"label": "INVALID_PARAM_VALUE", "message": "limit must be at least 1"}
        limit = min(limit, self.max_limit)
        start = 0 if self.ignore_offset else offset
        return 200, self.contracts[start : start + limit]

    def venue_error(self) -> tuple[int, Any]:
        return 400, {"label": "TOO_MANY_REQUESTS", "message": "Request Rate limit Exceeded"}


def gate_contract(
    name: str,
    multiplier: str = "0.0001",
    *,
    kind: str = "direct",
    status: str | None = "trading",
    in_delisting: bool = False,
) -> dict[str, Any]:
    """One item of the contracts list, with the fields the real one has."""
    item: dict[str, Any] = {
        "name": name,
        "type": kind,
        "quanto_multiplier": multiplier,
        "ref_discount_rate": "0",
        "order_price_deviate": "0.5",
        "maintenance_rate": "0.005",
        "mark_type": "index",
        "last_price": "97012.5",
        "mark_price": "97010.1",
        "index_price": "97008.7",
        "funding_rate_indicative": "0.0001",
        "mark_price_round": "0.01",
        "funding_offset": 0,
        "in_delisting": in_delisting,
        "risk_limit_base": "1000000",
        "interest_rate": "0.0003",
        "order_price_round": "0.1",
        "order_size_min": "1",
        "ref_rebate_rate": "0.2",
        "funding_interval": 28800,
        "risk_limit_step": "1000000",
        "leverage_min": "1",
        "leverage_max": "125",
        "risk_limit_max": "8000000",
        "maker_fee_rate": "-0.0001",
        "taker_fee_rate": "0.00075",
        "funding_rate": "0.0001",
        "order_size_max": "1000000",
        "funding_next_apply": 1732406400,
        "short_users": 1200,
        "config_change_time": 1732300000,
        "trade_size": "1234567890",
        "position_size": "7654321",
        "long_users": 1500,
        "funding_impact_value": "60000",
        "orders_limit": 100,
        "trade_id": 123456789,
        "orderbook_id": 987654321,
        "enable_bonus": True,
        "enable_credit": True,
        "create_time": 1574035200,
        "funding_cap_ratio": "0.75",
        "launch_time": 1574035200,
        "delisting_time": 0,
        "delisted_time": 0,
        "market_order_slip_ratio": "0.05",
        "market_order_size_max": "0",
        "funding_rate_limit": "0.003",
    }
    if status is not None:
        item["status"] = status
    return item


def gate_market(n: int, start: int = 0) -> list[dict[str, Any]]:
    """`n` USDT perpetuals: QAAA_USDT, QAAB_USDT, ..."""
    return [gate_contract(f"{c}_USDT", "1") for c in coins(n, start)]
