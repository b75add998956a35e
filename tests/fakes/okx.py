"""Fake OKX v5 venues: a WebSocket server (`FakeOkxServer`) and the instruments REST API (`FakeOkxRest`).

`FakeOkxServer` (on `collector.replay_server.FakeServer`) serves both `/ws/v5/public` (its `url`) and
`/ws/v5/business` (`business_url`), like OKX: `liquidation-orders` (instType SWAP, FUTURES, MARGIN,
OPTION) is subscribed on the public path only, `candle1m` (an instId) on the business path only; the
wrong path, an unknown name or a stream in `refuse` gets OKX's error event, code 60018
(`Wrong URL or channel:candle1m,instId:X doesn't exist. ...`), the other args of the same request are
acknowledged one by one (`{"event":"subscribe","arg":{...},"connId":...}`). A request that is not
JSON or has no args gets code 60012 ("Invalid request: <the request>"). The text `ping` is answered
with the text `pong` (counted in `pings`; not answered when `silent`). A pushed frame goes to the
peers subscribed to its `arg` (`<channel>:<instType or instId>`, as the adapter spells streams).
`recent`: liquidation frames sent again to every new `liquidation-orders` subscription right after
its ack, as OKX repeats recent liquidations in the first message after subscribing.

`FakeOkxRest` (on `tests.fakes.rest.FakeRest`) serves `GET /api/v5/public/instruments?instType=SWAP`
and `instType=FUTURES` from `instruments[inst_type]`, items built with `okx_instrument()` (every field
the real ones have); modes as `FakeRest`, "venue_error" answering OKX's `{"code":"50011",...}` with HTTP 200.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from collector.replay_server import FakeServer, Peer
from tests.fakes.rest import SERVER_TIME_MS, FakeRest

PUBLIC_PATH = "/ws/v5/public"
BUSINESS_PATH = "/ws/v5/business"
INSTRUMENTS_PATH = "/api/v5/public/instruments"
_INST_TYPES = ("SWAP", "FUTURES", "MARGIN", "OPTION")
_INST_ID = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{2,10}(?:-[A-Z0-9]{2,10})?$")
_PUBLIC_CHANNELS = ("liquidation-orders",)
_BUSINESS_CHANNELS = ("candle1m",)


@dataclass(eq=False)
class OkxPeer(Peer):
    endpoint: str = PUBLIC_PATH  # the path it connected to


def stream_name(arg: Any) -> str | None:
    """`<channel>:<instType or instId>` of an `arg` object, as the adapter names its streams."""
    if not isinstance(arg, dict):
        return None
    channel = arg.get("channel")
    value = arg.get("instType") if channel == "liquidation-orders" else arg.get("instId")
    if not isinstance(channel, str) or not isinstance(value, str):
        return None
    return f"{channel}:{value}"


class FakeOkxServer(FakeServer):
    path = PUBLIC_PATH

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recent: list[dict[str, Any]] = []
        self.errors_sent = 0

    @property
    def business_url(self) -> str:
        return f"ws://{self.host}:{self.port}{BUSINESS_PATH}"

    def peers_on(self, endpoint: str) -> list[OkxPeer]:
        return [p for p in self.connections if isinstance(p, OkxPeer) and p.endpoint == endpoint]

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path not in (PUBLIC_PATH, BUSINESS_PATH):
            return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    def _new_peer(self, ws: ServerConnection) -> Peer:
        assert ws.request is not None
        return OkxPeer(ws, endpoint=urlsplit(ws.request.path).path)

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
        stream = stream_name(obj.get("arg")) if isinstance(obj, dict) else None
        if stream is None:
            return text
        return text if stream in peer.streams else None

    async def _on_message(self, peer: Peer, text: str) -> None:
        if text == "ping":
            peer.pings += 1
            self.pings += 1
            if not self.silent:
                await self._send(peer, "pong")
            return
        if self.silent:
            return
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        op = request.get("op") if isinstance(request, dict) else None
        args = request.get("args") if isinstance(request, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            await self._error(peer, "60012", f"Invalid request: {text[:300]}")
            return
        endpoint = peer.endpoint if isinstance(peer, OkxPeer) else PUBLIC_PATH
        for arg in args:
            stream = stream_name(arg)
            if stream is None:
                await self._error(peer, "60012", f"Invalid request: {text[:300]}")
                continue
            channel, _, value = stream.partition(":")
            key = "instType" if channel == "liquidation-orders" else "instId"
            if not self._exists(channel, value, endpoint) or stream in self.refuse:
                await self._error(
                    peer,
                    "60018",
                    f"Wrong URL or channel:{channel},{key}:{value} doesn't exist. "
                    "Please use the correct URL, channel and parameters referring to API document.",
                )
                continue
            if op == "subscribe":
                peer.streams.add(stream)
            else:
                peer.streams.discard(stream)
            body = {"event": op, "arg": {"channel": channel, key: value}, "connId": peer.conn_id[:8]}
            await self._send(peer, json.dumps(body, separators=(",", ":")))
            if op == "subscribe" and channel == "liquidation-orders":
                for frame in self.recent:
                    if stream_name(frame.get("arg")) == stream:
                        await self._send(peer, json.dumps(frame, separators=(",", ":")))

    @staticmethod
    def _exists(channel: str, value: str, endpoint: str) -> bool:
        if channel in _PUBLIC_CHANNELS:
            return endpoint == PUBLIC_PATH and value in _INST_TYPES
        if channel in _BUSINESS_CHANNELS:
            return endpoint == BUSINESS_PATH and bool(_INST_ID.match(value))
        return False

    async def _error(self, peer: Peer, code: str, msg: str) -> None:
        self.errors_sent += 1
        body = {"event": "error", "code": code, "msg": msg, "connId": peer.conn_id[:8]}
        await self._send(peer, json.dumps(body, separators=(",", ":")))


class FakeOkxRest(FakeRest):
    def __init__(self, instruments: dict[str, list[Any]] | None = None) -> None:
        super().__init__()
        self.instruments: dict[str, list[Any]] = {"SWAP": [], "FUTURES": []}
        self.instruments.update(instruments or {})

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path != INSTRUMENTS_PATH:
            return 404, {"code": "50000", "msg": "Not Found", "data": []}
        inst_type = query.get("instType", "")
        if inst_type not in self.instruments:
            return 200, {"code": "51000", "msg": "Parameter instType error", "data": []}
        return 200, {"code": "0", "msg": "", "data": self.instruments[inst_type]}

    def venue_error(self) -> tuple[int, Any]:
        return 200, {"code": "50011", "msg": "Too Many Requests", "data": []}


def okx_instrument(
    inst_id: str,
    ct_val: str,
    *,
    inst_type: str = "SWAP",
    ct_val_ccy: str | None = None,
    settle: str | None = None,
    ct_type: str = "linear",
    state: str = "live",
    exp_ms: int | None = None,
) -> dict[str, Any]:
    """One item of the instruments answer (SWAP or FUTURES), with every field the real one has."""
    base, quote = inst_id.split("-")[:2]
    return {
        "alias": "quarter" if inst_type == "FUTURES" else "",
        "auctionEndTime": "",
        "baseCcy": "",
        "category": "1",
        "contTdSwTime": "",
        "ctMult": "1",
        "ctType": ct_type,
        "ctVal": ct_val,
        "ctValCcy": ct_val_ccy or (base if ct_type == "linear" else quote),
        "expTime": str(exp_ms) if exp_ms is not None else "",
        "futureSettlement": False,
        "instFamily": f"{base}-{quote}",
        "instId": inst_id,
        "instType": inst_type,
        "lever": "100",
        "listTime": str(SERVER_TIME_MS - 86_400_000),
        "lotSz": "0.01",
        "maxIcebergSz": "100000000.0000000000000000",
        "maxLmtAmt": "20000000",
        "maxLmtSz": "100000000",
        "maxMktAmt": "",
        "maxMktSz": "12000",
        "maxStopSz": "12000",
        "maxTriggerSz": "100000000.0000000000000000",
        "maxTwapSz": "100000000.0000000000000000",
        "minSz": "0.01",
        "openType": "",
        "optType": "",
        "quoteCcy": "",
        "ruleType": "normal",
        "settleCcy": settle or (quote if ct_type == "linear" else base),
        "state": state,
        "stk": "",
        "tickSz": "0.1",
        "uly": f"{base}-{quote}",
    }
