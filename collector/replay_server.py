"""Local WebSocket servers that speak the Binance USD-M and Bybit v5 public protocols, for tests and replay.

They listen on 127.0.0.1 (a free port unless given) and never reach the internet. Tests use them
to drive the adapters end to end and to inject faults; `collector.replay` uses them to serve
recorded sessions.

API (both servers alike)::

    async with BinanceServer() as srv:          # or BybitServer(); args: host="127.0.0.1", port=0,
                                                # ping_interval, ping_timeout (the server's protocol
                                                # pings; default `venue_ping`: 20 and 20, Binance 180
                                                # and 600 as documented; None: no pings)
        srv.url                                 # "ws://127.0.0.1:<port>/market"
                                                # (Bybit: "ws://127.0.0.1:<port>/v5/public/linear")
        peer = await srv.wait_connected(1, within=10)
                                                # n connections accepted so far (cumulative) and one open
                                                # (Bybit: with subscribed topics); returns that peer
        await srv.push(frame)                   # dict or raw text, to the peers subscribed to it;
                                                # returns how many peers it was sent to
        await srv.push_raw("not json")          # raw text to every open peer, unfiltered (garbage)
        srv.connections                         # open peers: Peer(ws, streams, raw, received, pings)
        srv.ready_connections                   # open peers that are subscribed
        srv.accepted                            # connections accepted since start
        srv.pings                               # Bybit app-level pings received, all connections
        await srv.drop_all(4000)                # close every peer with that code; 1006 or None
                                                # aborts the TCP connection (abnormal closure)
        srv.silent = True                       # send nothing, answer no app-level ping/subscribe
        srv.refuse = {"kline.1.BTCUSDT"}        # Bybit: ack success:false for these topics
                                                # Binance: handshake refused (HTTP 400) for these streams
        srv.no_pong = True                      # stop answering protocol-level (RFC 6455) pings
        await srv.wait_for(lambda: ..., within=10) # poll any condition

Binance serves `/market/stream?streams=a/b` (combined: every frame wrapped as
`{"stream": ..., "data": ...}`) and `/market/ws/<stream>` (raw payloads), and answers
`{"method": "SUBSCRIBE", ...}` with `{"result": null, "id": ...}`. A pushed payload is routed by
its stream name, derived from the payload (`<symbol>@forceOrder`, `<symbol>@kline_<i>`) or taken
from an already wrapped combined frame. Bybit serves `/v5/public/linear`, acknowledges
`subscribe` (`success:false` for unknown or refused topics, then nothing of that request is
subscribed), answers `ping` with `ret_msg:"pong"` and pushes a frame only to peers subscribed to
its `topic`. Text that cannot be routed goes to every peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

BINANCE_BASE_PATH = "/market"
BYBIT_PATH = "/v5/public/linear"
_BYBIT_TOPIC_RE = re.compile(
    r"^(?:(?:allLiquidation|liquidation|publicTrade|tickers)\.[A-Z0-9]{2,24}"
    r"|kline\.(?:1|3|5|15|30|60|120|240|360|720|D|W|M)\.[A-Z0-9]{2,24}"
    r"|orderbook\.\d{1,4}\.[A-Z0-9]{2,24})$"
)


@dataclass(eq=False)
class Peer:
    """One connected client as the server sees it."""

    ws: ServerConnection
    streams: set[str] = field(default_factory=set)  # Binance stream names as requested / Bybit topics
    raw: bool = False  # Binance `/ws/<stream>`: payloads are sent unwrapped
    received: list[str] = field(default_factory=list)  # every text message the client sent
    pings: int = 0  # Bybit app-level pings received
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # Bybit echoes one in every ack


class FakeServer:
    """What both fake exchanges share: lifecycle, peers, fault switches, waiting."""

    path = "/"
    # The server's protocol pings and the deadline of their pongs: websockets' defaults unless the
    # venue documents its own.
    venue_ping: ClassVar[tuple[float, float]] = (20, 20)

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ping_interval: float | None | Literal["venue"] = "venue",
        ping_timeout: float | None | Literal["venue"] = "venue",
    ) -> None:
        self.host = host
        self.port = port
        self.ping_interval = self.venue_ping[0] if ping_interval == "venue" else ping_interval
        self.ping_timeout = self.venue_ping[1] if ping_timeout == "venue" else ping_timeout
        self.silent = False
        self.no_pong = False
        self.refuse: set[str] = set()
        self.accepted = 0
        self.pings = 0
        self._peers: list[Peer] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.path}"

    @property
    def connections(self) -> list[Peer]:
        return list(self._peers)

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_for(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        """Poll `condition` (it may look at anything, not only this server); TimeoutError after `within` s."""
        async with asyncio.timeout(within):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.01)

    @property
    def ready_connections(self) -> list[Peer]:
        """Open peers that are subscribed (Binance: all of them, the URL subscribes)."""
        return [p for p in self._peers if self._ready(p)]

    async def wait_connected(self, n: int = 1, within: float = 10.0) -> Peer:
        """Wait until `n` connections were accepted since start and one is open (and ready); return it."""
        await self.wait_for(lambda: self.accepted >= n and any(self._ready(p) for p in self._peers), within)
        return next(p for p in reversed(self._peers) if self._ready(p))

    async def push(self, frame: str | dict[str, Any]) -> int:
        """Send one frame to the peers subscribed to it; return how many got it."""
        if self.silent:
            return 0
        sent = 0
        for peer in list(self._peers):
            text = self._route(frame, peer)
            if text is not None and await self._send(peer, text):
                sent += 1
        return sent

    async def push_raw(self, text: str | bytes) -> int:
        """Send text (or bytes, as a binary frame) to every open peer, unfiltered."""
        if self.silent:
            return 0
        sent = 0
        for peer in list(self._peers):
            if await self._send(peer, text):
                sent += 1
        return sent

    async def drop_all(self, code: int | None = 1011, reason: str = "") -> int:
        """Close every open connection; code None or 1006 aborts TCP without a close frame."""
        peers = list(self._peers)
        for peer in peers:
            if code is None or code == 1006:
                peer.ws.transport.abort()
            else:
                with contextlib.suppress(ConnectionClosed):
                    await peer.ws.close(code, reason)
        return len(peers)

    # -- for the subclasses --------------------------------------------------------------------

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != self.path:
            return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    def _ready(self, peer: Peer) -> bool:
        return True

    def _route(self, frame: str | dict[str, Any], peer: Peer) -> str | None:
        raise NotImplementedError

    async def _on_message(self, peer: Peer, text: str) -> None:
        raise NotImplementedError

    def _new_peer(self, ws: ServerConnection) -> Peer:
        return Peer(ws)

    async def _send(self, peer: Peer, text: str | bytes) -> bool:
        try:
            await peer.ws.send(text)
        except ConnectionClosed:
            return False
        return True

    async def _handle(self, ws: ServerConnection) -> None:
        self._mute_pongs(ws)
        peer = self._new_peer(ws)
        self.accepted += 1
        self._peers.append(peer)
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                peer.received.append(text)
                await self._on_message(peer, text)
        except ConnectionClosed:
            pass
        finally:
            self._peers.remove(peer)

    def _mute_pongs(self, ws: ServerConnection) -> None:
        # websockets answers pings inside its protocol object; wrapping its send_frame is the
        # only way to play a peer that stopped answering them.
        send_frame = ws.protocol.send_frame

        def _send_frame(frame: Frame) -> None:
            if frame.opcode is Opcode.PONG and self.no_pong:
                return
            send_frame(frame)

        ws.protocol.send_frame = _send_frame  # type: ignore[method-assign]


def _binance_stream_of(payload: dict[str, Any]) -> str | None:
    """The stream a Binance payload belongs to, lower case, or None when it cannot be told."""
    kind = payload.get("e")
    if kind == "forceOrder":
        order = payload.get("o")
        symbol = order.get("s") if isinstance(order, dict) else None
        return f"{symbol.lower()}@forceorder" if isinstance(symbol, str) else None
    if kind == "kline":
        k = payload.get("k")
        symbol = payload.get("s")
        interval = k.get("i") if isinstance(k, dict) else None
        if isinstance(symbol, str) and isinstance(interval, str):
            return f"{symbol.lower()}@kline_{interval}"
    return None


class BinanceServer(FakeServer):
    """Binance USD-M market streams: `/market/stream?streams=...` and `/market/ws/<stream>`."""

    path = BINANCE_BASE_PATH
    venue_ping = (180, 600)  # documented: a ping every 3 minutes, cut when no pong came within 10

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        streams = self._streams_of(parts.path, parts.query)
        if streams is None:
            return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
        refused = {s.lower() for s in streams} & {s.lower() for s in self.refuse}
        if refused:
            return ws.respond(HTTPStatus.BAD_REQUEST, f"invalid streams: {sorted(refused)}\n")
        return None

    def _streams_of(self, path: str, query: str) -> set[str] | None:
        if path == f"{self.path}/stream":
            names = parse_qs(query).get("streams", [""])[0]
            return {s for s in names.split("/") if s}
        if path.startswith(f"{self.path}/ws/") and len(path) > len(self.path) + 4:
            return {path[len(self.path) + 4 :]}
        return None

    def _new_peer(self, ws: ServerConnection) -> Peer:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        return Peer(ws, streams=self._streams_of(parts.path, parts.query) or set(), raw="/ws/" in parts.path)

    def _route(self, frame: str | dict[str, Any], peer: Peer) -> str | None:
        text = frame if isinstance(frame, str) else None
        try:
            obj = json.loads(frame) if isinstance(frame, str) else frame
        except ValueError:
            return text
        if not isinstance(obj, dict):
            return text
        if isinstance(obj.get("stream"), str) and isinstance(obj.get("data"), dict):
            stream, payload = obj["stream"].lower(), obj["data"]
        else:
            found = _binance_stream_of(obj)
            if found is None:
                return text if text is not None else json.dumps(obj, separators=(",", ":"))
            stream, payload = found, obj
        # Matching ignores case; the wrapper echoes the name as the client asked for it, like Binance.
        requested = next((s for s in peer.streams if s.lower() == stream), None)
        if requested is None:
            return None
        if peer.raw:
            return json.dumps(payload, separators=(",", ":"))
        return json.dumps({"stream": requested, "data": payload}, separators=(",", ":"))

    async def _on_message(self, peer: Peer, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            return
        if self.silent or not isinstance(request, dict):
            return
        method, params = request.get("method"), request.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and isinstance(params, list):
            names = {str(p) for p in params}
            if method == "SUBSCRIBE":
                peer.streams |= names
            else:
                peer.streams = {s for s in peer.streams if s.lower() not in {n.lower() for n in names}}
            await self._send(peer, json.dumps({"result": None, "id": request.get("id")}))


class BybitServer(FakeServer):
    """Bybit v5 public linear: subscribe acks, app-level ping/pong, topic routing."""

    path = BYBIT_PATH

    def _ready(self, peer: Peer) -> bool:
        return bool(peer.streams)

    def _route(self, frame: str | dict[str, Any], peer: Peer) -> str | None:
        if isinstance(frame, dict):
            topic = frame.get("topic")
            text = json.dumps(frame, separators=(",", ":"))
        else:
            text = frame
            try:
                obj = json.loads(frame)
            except ValueError:
                return text
            topic = obj.get("topic") if isinstance(obj, dict) else None
        if not isinstance(topic, str):
            return text
        return text if topic in peer.streams else None

    async def _on_message(self, peer: Peer, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            return
        if not isinstance(request, dict):
            return
        op, req_id = request.get("op"), request.get("req_id")
        if op == "ping":
            peer.pings += 1
            self.pings += 1
            if not self.silent:
                await self._send(peer, self._reply(op, req_id, True, "pong", peer))
        elif op in ("subscribe", "unsubscribe") and not self.silent:
            args = request.get("args")
            topics = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
            bad = [t for t in topics if t in self.refuse or not _BYBIT_TOPIC_RE.match(t)]
            if not topics or bad:
                message = f"Invalid topic :[{', '.join(bad)}]" if bad else "args missing"
                await self._send(peer, self._reply(op, req_id, False, message, peer))
                return
            if op == "subscribe":
                peer.streams |= set(topics)
            else:
                peer.streams -= set(topics)
            await self._send(peer, self._reply(op, req_id, True, "", peer))

    @staticmethod
    def _reply(op: str, req_id: Any, success: bool, ret_msg: str, peer: Peer) -> str:
        body = {"success": success, "ret_msg": ret_msg, "conn_id": peer.conn_id, "req_id": req_id, "op": op}
        return json.dumps(body, separators=(",", ":"))
