"""Fake venue WebSocket servers for the whole market, on top of `collector.replay_server`.

`WholeMarketBinance` also serves Binance's all-symbols liquidation stream `!forceOrder@arr`: a
forceOrder payload pushed with `push()` goes to every peer subscribed to its `<symbol>@forceOrder`
stream and to every peer subscribed to `!forceOrder@arr` (wrapped with that stream name, as Binance
does). Everything else is `BinanceServer` as it is.
"""

from __future__ import annotations

import json
from typing import Any

from collector.replay_server import BinanceServer, Peer

ALL_LIQUIDATIONS = "!forceOrder@arr"


class WholeMarketBinance(BinanceServer):
    def _route(self, frame: str | dict[str, Any], peer: Peer) -> str | None:
        routed = super()._route(frame, peer)
        if routed is not None:
            return routed
        subscribed = next((s for s in peer.streams if s.lower() == ALL_LIQUIDATIONS.lower()), None)
        if subscribed is None:
            return None
        obj = json.loads(frame) if isinstance(frame, str) else frame
        if not isinstance(obj, dict):
            return None
        payload = obj.get("data") if isinstance(obj.get("data"), dict) else obj
        if not isinstance(payload, dict) or payload.get("e") != "forceOrder":
            return None
        if peer.raw:
            return json.dumps(payload, separators=(",", ":"))
        return json.dumps({"stream": subscribed, "data": payload}, separators=(",", ":"))

    def streams_of_all(self) -> list[set[str]]:
        """The streams of every open connection."""
        return [set(p.streams) for p in self.connections]
