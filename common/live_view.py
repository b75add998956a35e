"""The Redis live view: key names and the codecs the collector writes and the app reads.

All keys start with `LIQ_REDIS_PREFIX` (default `liq:`), so several deployments or test runs can
share one Redis. The collector is the only writer; the app and CLI only read.

    {p}live:liqs        ZSET  score = exchange time (ms), member = encode_liquidation(...)
                              every liquidation of the last 60 minutes (+ a small margin), all
                              symbols; members are deterministic, so a re-delivered event is a no-op
    {p}live:cascades    HASH  cascade id -> encode_cascade(...): active ones and those that ended
                              within the last 60 minutes
    {p}live:health      HASH  exchange -> JSON of StreamHealth.snapshot() (connected, last message
                              age, reconnects, last error, drops by reason)
    {p}live:collector   HASH  "state" -> JSON {heartbeat_ms, started_ms, pid, sources, queue,
                              spool: {pending_events, bytes, state}, redis_rebuilt_ms}
    {p}live:built       STRING set once the view was rebuilt from TimescaleDB after Redis came
                              back empty; absent means "rebuild before trusting the window"

The 60-minute window is exact: readers take ZRANGEBYSCORE [now - 3_600_000, now] and sum, so the
figures equal the same query over TimescaleDB. Writers trim older members at most every second.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from common.events import Cascade, Liquidation, Side

WINDOW_MS = 3_600_000
# Members older than the window are kept this much longer so that a reader's clock that runs a
# little behind the writer's still sees a full window.
TRIM_MARGIN_MS = 120_000
# The collector's heartbeat is refreshed every second; older than this means "not running".
COLLECTOR_STALE_MS = 15_000


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.liqs = f"{prefix}live:liqs"
        self.cascades = f"{prefix}live:cascades"
        self.health = f"{prefix}live:health"
        self.collector = f"{prefix}live:collector"
        self.built = f"{prefix}live:built"

    def all(self) -> list[str]:
        return [self.liqs, self.cascades, self.health, self.collector, self.built]


def encode_liquidation(ev: Liquidation) -> str:
    """Compact, deterministic JSON: the same event always gives the same ZSET member."""
    return json.dumps(
        [
            ev.key,
            ev.exchange,
            ev.symbol,
            str(ev.side),
            f"{ev.quantity:f}",
            f"{ev.price:f}",
            f"{ev.value_usd:f}",
            ev.time_ms,
            ev.source,
            ev.sampled,
        ],
        separators=(",", ":"),
    )


def decode_liquidation(member: str | bytes) -> dict[str, Any]:
    """The app's view of one member: plain values, amounts as Decimal."""
    key, exchange, symbol, side, qty, price, usd, time_ms, source, sampled = json.loads(member)
    return {
        "key": key,
        "exchange": exchange,
        "symbol": symbol,
        "side": Side(side),
        "quantity": Decimal(qty),
        "price": Decimal(price),
        "value_usd": Decimal(usd),
        "time_ms": int(time_ms),
        "source": source,
        "sampled": bool(sampled),
    }


def encode_cascade(c: Cascade) -> str:
    return json.dumps(
        {
            "id": c.id,
            "symbol": c.symbol,
            "side": str(c.side),
            "start_ms": c.start_ms,
            "end_ms": c.end_ms,
            "count": c.count,
            "quantity": f"{c.quantity:f}",
            "value_usd": f"{c.value_usd:f}",
            "counts": c.counts,
            "peak_minute_ms": c.peak_minute_ms,
            "price_start": None if c.price_start is None else f"{c.price_start:f}",
            "price_end": None if c.price_end is None else f"{c.price_end:f}",
            "risk_score": c.risk_score,
            "active": c.active,
            "source": c.source,
        },
        separators=(",", ":"),
    )


def decode_cascade(raw: str | bytes) -> Cascade:
    d = json.loads(raw)
    return Cascade(
        id=int(d["id"]),
        symbol=d["symbol"],
        side=Side(d["side"]),
        start_ms=int(d["start_ms"]),
        end_ms=int(d["end_ms"]),
        count=int(d["count"]),
        quantity=Decimal(d["quantity"]),
        value_usd=Decimal(d["value_usd"]),
        counts={k: int(v) for k, v in d["counts"].items()},
        peak_minute_ms=int(d["peak_minute_ms"]),
        price_start=None if d["price_start"] is None else Decimal(d["price_start"]),
        price_end=None if d["price_end"] is None else Decimal(d["price_end"]),
        risk_score=int(d["risk_score"]),
        active=bool(d["active"]),
        source=d["source"],
    )
