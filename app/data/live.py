"""The live 60-minute view from Redis, as written by the collector (common/live_view.py).

The window is exact: ZRANGEBYSCORE [now - WINDOW_MS, now], decoded and summed here, so the figures
equal the same query over TimescaleDB. `snapshot()` also reads the cascades, the per-stream health
and the collector's heartbeat, and `collector_state()` tells "not running" (heartbeat missing or
older than COLLECTOR_STALE_MS) apart from "running". Redis failures raise DataUnavailable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import redis
import streamlit as st

from app.data.connections import get_redis, redis_errors
from app.data.history import Breakdown
from common.events import Cascade
from common.live_view import COLLECTOR_STALE_MS, WINDOW_MS, Keys, decode_cascade, decode_liquidation

EVENT_COLUMNS = ["time_ms", "exchange", "symbol", "side", "quantity", "price", "value_usd", "source", "sampled"]


@dataclass
class LiveSnapshot:
    now_ms: int
    events: pd.DataFrame  # EVENT_COLUMNS, newest first, amounts as Decimal
    totals: Breakdown
    cascades: list[Cascade]  # active or ended within the window, matching the filters
    health: dict[str, dict[str, Any]]  # exchange -> StreamHealth.snapshot()
    collector: dict[str, Any] | None  # the heartbeat JSON, None when missing
    sources: set[str] = field(default_factory=set)  # sources seen in the window (all symbols)

    @property
    def collector_age_ms(self) -> int | None:
        if not self.collector or "heartbeat_ms" not in self.collector:
            return None
        return self.now_ms - int(self.collector["heartbeat_ms"])

    def collector_state(self) -> str:
        """'missing' (never ran / key gone), 'stale' (stopped), or 'running'."""
        age = self.collector_age_ms
        if age is None:
            return "missing"
        return "stale" if age > COLLECTOR_STALE_MS else "running"

    @property
    def nonlive_sources(self) -> list[str]:
        # The collector reports {"binance": "live", ...}: its values are the sources.
        reported = (self.collector or {}).get("sources") or {}
        seen = set(self.sources) | set(reported.values() if isinstance(reported, dict) else reported)
        return sorted(s for s in seen if s != "live")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def snapshot(
    client: redis.Redis,
    keys: Keys,
    symbol: str | None,
    exchanges: tuple[str, ...],
    now: int | None = None,
) -> LiveSnapshot:
    """Everything the live page shows, read in one pipeline."""
    now = now_ms() if now is None else now
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        pipe.zrangebyscore(keys.liqs, now - WINDOW_MS, now)
        pipe.hgetall(keys.cascades)
        pipe.hgetall(keys.health)
        pipe.hget(keys.collector, "state")
        members, cascades_raw, health_raw, collector_raw = pipe.execute()

    rows = []
    sources: set[str] = set()
    out = Breakdown()
    for member in members:
        ev = decode_liquidation(member)
        sources.add(ev["source"])
        if (symbol is not None and ev["symbol"] != symbol) or ev["exchange"] not in exchanges:
            continue
        out.add(ev["exchange"], str(ev["side"]), 1, ev["quantity"], ev["value_usd"])
        if out.max_usd is None or ev["value_usd"] > out.max_usd:
            out.max_usd = ev["value_usd"]
        rows.append([ev[c] if c != "side" else str(ev["side"]) for c in EVENT_COLUMNS])
    events = pd.DataFrame(rows, columns=EVENT_COLUMNS).iloc[::-1].reset_index(drop=True)

    cascades = []
    for raw in cascades_raw.values():
        c = decode_cascade(raw)
        in_window = c.active or c.end_ms >= now - WINDOW_MS
        if in_window and (symbol is None or c.symbol == symbol) and any(e in exchanges for e in c.counts):
            cascades.append(c)
    cascades.sort(key=lambda c: (not c.active, -c.end_ms))

    health = {}
    for exchange, raw in health_raw.items():
        name = exchange.decode() if isinstance(exchange, bytes) else str(exchange)
        health[name] = json.loads(raw)
    collector = json.loads(collector_raw) if collector_raw else None
    return LiveSnapshot(now, events, out, cascades, health, collector, sources)


def stream_age_s(h: dict[str, Any], now: int) -> float | None:
    """Seconds since the stream's last message, from our clock (the snapshot may itself be old)."""
    last = h.get("last_message_ms")
    return None if last is None else max(0.0, (now - int(last)) / 1000)


@st.cache_data(ttl=2, show_spinner=False)
def cached_snapshot(url: str, prefix: str, symbol: str | None, exchanges: tuple[str, ...]) -> LiveSnapshot:
    return snapshot(get_redis(url), Keys(prefix), symbol, exchanges)
