"""The Redis live view: key names and the codecs the collector writes and the app reads.

All keys start with `LIQ_REDIS_PREFIX` (default `liq:`), so several deployments or test runs can
share one Redis. The collector is the only writer; the app and CLI only read.

    {p}live:liqs        ZSET  score = exchange time (ms), member = encode_liquidation(...)
                              every liquidation of the last 60 minutes (+ a small margin), all
                              symbols; members are deterministic (numbers in canonical text), so a
                              re-delivered event is a no-op however the venue wrote its numbers
    {p}live:agg:<b>     HASH  sums of the liquidations of the 10-second bucket starting at <b> (ms),
                              all symbols, per group [exchange, side, source]
    {p}live:agg:<b>:<symbol>  the same for one symbol (symbol_text(symbol))
    {p}live:aggkeys     ZSET  the aggregate keys' suffixes ("<b>" and "<b>:<symbol>"), score <b>
    {p}live:sources     ZSET  source ("live", "replay", ...) -> time (ms) of its newest liquidation
    {p}live:cascades    HASH  cascade id -> encode_cascade(...): active ones and those that ended
                              within the last 60 minutes
    {p}live:health      HASH  exchange -> JSON of StreamHealth.snapshot() (connected, last message
                              age, reconnects, last error, drops by reason): with several
                              collectors, the best of theirs (merge_health), plus `collectors` and
                              `collectors_connected`
    {p}live:health:<instance>  HASH  the same, of one collector (expires a minute after its last write)
    {p}live:collectors  HASH  collector instance ("host:pid") -> JSON of its state, as below
    {p}live:collector   HASH  "state" -> JSON of the collector's state: heartbeat_ms, started_ms,
                              pid, sources, queue, spool {pending_events, bytes, state, error},
                              database, database_error, backpressure, backpressure_s,
                              quarantined_rows, last_quarantine_reason, invalid_events,
                              redis_rebuilt_ms, instance, leader, and `collectors`: a summary of
                              every collector heard from within COLLECTOR_STALE_MS (readers show
                              what is there, nothing for a missing key)
    {p}live:built:v2    STRING set once the view (members and aggregates) was rebuilt from
                              TimescaleDB; absent means "rebuild before trusting the window"
    {p}stream:events    STREAM what the alerter reads (consumer group `alerter`): fields `kind`
                              (`liquidations` | `cascades`: one entry a batch, written by
                              stream_liquidations() and stream_cascades(); `liquidation` |
                              `cascade`: one object each, from older collectors) and `data` (JSON):
                              liquidations of at least
                              LIQ_ALERT_STREAM_MIN_USD and every cascade update; about
                              STREAM_MAXLEN entries kept

Aggregate fields are `<group><kind>`, group = group_text(exchange, side, source) (a JSON array),
kind `n` (count), `x` (largest USD, canonical text), `q<k>` and `u<k>` (quantity and USD). Amounts
are kept exactly as integer limbs: `q<k>` is the sum of the 9-digit groups of digits at 10^(9k)
(k = 0 units, k = -1 the first nine decimals, ...), so quantity = sum of q<k> * 10^(9k), exact for
any decimal and any count (each limb adds < 10^9; 64-bit HINCRBY overflows after 9 * 10^9 events).
A member and its sums are written by one Lua script call (common/live_scripts.py) that counts only
members the ZSET did not hold, so the sums equal the members at every moment.

The 60-minute window [now - 3_600_000, now] stays exact and bounded: readers sum the aggregates of
the buckets inside it and decode only the raw members of the two partial buckets at its edges.
Aggregate keys expire an hour after their bucket; members are trimmed at most every second.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

from common.events import Cascade, Liquidation, Side, canonical_text

WINDOW_MS = 3_600_000
# Members older than the window are kept this much longer so that a reader's clock that runs a
# little behind the writer's still sees a full window.
TRIM_MARGIN_MS = 120_000
# Width of an aggregate bucket: a reader decodes at most two of them as raw members.
BUCKET_MS = 10_000
# The collector's heartbeat is refreshed every second; older than this means "not running".
COLLECTOR_STALE_MS = 15_000
# The collector reports it trails the venues by this much or more: the live page and the CLI say so.
BEHIND_WARN_S = 5.0
# The writer's "no cutoff" (seeding tests and tools write events of any age).
NO_CUTOFF_MS = -(2**53)

# Name characters written as they are in key names and members (nothing JSON would escape).
PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:")


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.liqs = f"{prefix}live:liqs"
        self.agg = f"{prefix}live:agg:"  # + "<bucket ms>" or "<bucket ms>:<symbol text>"
        self.agg_keys = f"{prefix}live:aggkeys"
        self.sources = f"{prefix}live:sources"
        self.cascades = f"{prefix}live:cascades"
        self.health = f"{prefix}live:health"
        self.collector = f"{prefix}live:collector"
        self.collectors = f"{prefix}live:collectors"
        self.built = f"{prefix}live:built:v2"  # v2: with aggregates (a v1 view is rebuilt once)
        self.stream = f"{prefix}stream:events"  # for the alerter
        # The rebuild assembles a new window here, then swaps it in (collector/storage/redis_live.py).
        self.scratch_liqs = f"{self.liqs}:rebuild"
        self.scratch_agg = f"{prefix}live:rebuild:agg:"
        self.scratch_agg_keys = f"{prefix}live:rebuild:aggkeys"
        self.scratch_sources = f"{prefix}live:rebuild:sources"
        self.rebuild_token = f"{self.liqs}:rebuild:token"

    def agg_key(self, bucket_ms: int, symbol: str | None = None) -> str:
        """The aggregate of one bucket: all symbols, or one."""
        return f"{self.agg}{bucket_ms}" if symbol is None else f"{self.agg}{bucket_ms}:{symbol_text(symbol)}"

    def health_of(self, instance: str) -> str:
        """One collector's own stream health."""
        return f"{self.health}:{instance}"

    def all(self) -> list[str]:
        return [
            self.liqs,
            self.agg_keys,
            self.sources,
            self.cascades,
            self.health,
            self.collector,
            self.collectors,
            self.built,
        ]


def merge_health(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """One venue's health as several collectors see it: the best one (connected first, then the
    freshest message), with how many collectors report the venue and how many are connected. A
    venue is down only when every collector lost it."""
    best = max(snapshots, key=lambda s: (bool(s.get("connected")), s.get("last_message_ms") or -1))
    return {
        **best,
        "collectors": len(snapshots),
        "collectors_connected": sum(1 for s in snapshots if s.get("connected")),
    }


STREAM_MAXLEN = 100_000  # entries of the alerter's stream kept (approximately): hours of cascades and big ones


def stream_liquidations(events: list[Liquidation]) -> str:
    """The liquidations of one batch as one stream entry (`kind` "liquidations"): a JSON array of
    liquidation objects (numbers as exact text). One entry a batch keeps the stream's cost off the
    hot path. orjson writes what `json.dumps(..., separators=(",", ":"), ensure_ascii=False)` writes,
    in a third of the time: in a burst where most liquidations pass the floor this was a tenth of
    the collector's CPU (py-spy, bench.bench_market at 22,000/s)."""
    return orjson.dumps([_stream_fields(ev) for ev in events]).decode()


def _stream_fields(ev: Liquidation) -> dict[str, Any]:
    return {
        "exchange": ev.exchange,
        "symbol": ev.symbol,
        "side": str(ev.side),
        "quantity": canonical_text(ev.quantity),
        "price": canonical_text(ev.price),
        "value_usd": canonical_text(ev.value_usd),
        "time_ms": ev.time_ms,
        "key": str(ev.key),
        "source": ev.source,
        "sampled": ev.sampled,
    }


def stream_cascades(cascades: list[Cascade]) -> str:
    """The cascade updates of one batch as one stream entry (`kind` "cascades"): a JSON array of
    cascade objects, in order; an id's start is the first update seen active, its end the one with
    `active` false. A whole-market burst updates a thousand cascades a second: one entry each cost
    the collector more than the updates themselves. orjson, as `stream_liquidations`."""
    return orjson.dumps([_stream_cascade_fields(c) for c in cascades]).decode()


def _stream_cascade_fields(c: Cascade) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "symbol": c.symbol,
        "side": str(c.side),
        "start_ms": c.start_ms,
        "end_ms": c.end_ms,
        "events": c.count,
        "quantity": canonical_text(c.quantity),
        "value_usd": canonical_text(c.value_usd),
        "exchanges": list(c.exchanges),
        "usd_by_exchange": {k: canonical_text(v) for k, v in c.usd.items()},
        "risk_score": c.risk_score,
        "active": c.active,
        "cross_exchange": c.cross_exchange,
        "source": c.source,
    }


def bucket_of(time_ms: int) -> int:
    return time_ms - time_ms % BUCKET_MS


def symbol_text(symbol: str) -> str:
    """The symbol as it appears in a key name: itself when plain, else JSON-escaped ASCII."""
    return symbol if PLAIN.issuperset(symbol) else json.dumps(symbol)[1:-1]


@lru_cache(maxsize=65536)
def symbol_of_text(text: str) -> str:
    """The inverse of `symbol_text` (plain, or JSON-escaped ASCII)."""
    return str(json.loads(f'"{text}"'))


@lru_cache(maxsize=4096)
def group_of_text(text: str | bytes) -> tuple[str, str, str]:
    """The inverse of `group_text`: (exchange, side, source)."""
    exchange, side, source = json.loads(text)
    return str(exchange), str(side), str(source)


def group_text(exchange: str, side: str, source: str) -> str:
    """An aggregate group: a compact JSON array, unambiguous whatever the names hold."""
    return json.dumps([exchange, side, source], separators=(",", ":"))


def encode_liquidation(ev: Liquidation) -> str:
    """Compact, deterministic JSON (ASCII, numbers in canonical text): one event, one ZSET member."""
    return json.dumps(
        [
            ev.key,
            ev.exchange,
            ev.symbol,
            str(ev.side),
            canonical_text(ev.quantity),
            canonical_text(ev.price),
            canonical_text(ev.value_usd),
            ev.time_ms,
            ev.source,
            ev.sampled,
        ],
        separators=(",", ":"),
    )


def member_text(ev: Liquidation, quantity: str, price: str, value_usd: str) -> str:
    """`encode_liquidation(ev)` byte for byte, given the canonical texts, without json.dumps when
    every text field is plain (several times faster; anything JSON would escape takes the codec)."""
    if not (PLAIN.issuperset(ev.exchange) and PLAIN.issuperset(ev.symbol) and PLAIN.issuperset(ev.source)):
        return encode_liquidation(ev)
    sampled = "true" if ev.sampled else "false"
    return (
        f'[{ev.key},"{ev.exchange}","{ev.symbol}","{ev.side.value}","{quantity}","{price}",'
        f'"{value_usd}",{ev.time_ms},"{ev.source}",{sampled}]'
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


def limbs_to_decimal(limbs: dict[int, int]) -> Decimal:
    """sum(v * 10^(9k)) exactly, without trailing fractional zeros (no context rounding)."""
    if not limbs:
        return Decimal(0)
    low = min(limbs)
    total = sum(v * 10 ** (9 * (k - low)) for k, v in limbs.items())
    exponent = 9 * low
    if exponent >= 0:
        return Decimal(total * 10**exponent)
    while exponent < 0 and total % 10 == 0 and total:
        total //= 10
        exponent += 1
    return Decimal(f"{total}E{exponent}") if exponent < 0 else Decimal(total)


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
            "usd": {k: f"{v:f}" for k, v in c.usd.items()},
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
        usd={k: Decimal(v) for k, v in d.get("usd", {}).items()},  # absent in spools written before it
    )
