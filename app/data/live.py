"""The live 60-minute view from Redis, as written by the collector (common/live_view.py).

Bounded whatever the window holds: the totals are the sums the collector keeps per 10-second
bucket (one small hash per bucket), plus the raw members of the two partial buckets at the edges
of [now - WINDOW_MS, now], so the figures stay exact (equal to the same query over TimescaleDB);
the table holds only the latest `latest` liquidations of the selection (ZREVRANGEBYSCORE pages,
at most `MAX_SCAN` members). `snapshot()` also reads the cascades, the per-stream health and the
collector's state, and `collector_state()` tells "not running" (heartbeat missing or older than
COLLECTOR_STALE_MS) apart from "running". Redis failures and deadlines raise DataUnavailable.
`venue_instruments()` folds the collector's per-venue instrument state and each stream's topic
counts into one `VenueInstruments` per venue, for the live page and the CLI snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

import pandas as pd
import redis

from app.data.connections import redis_errors
from app.data.history import Breakdown
from app.data.rows import cascade_names_of
from app.format import fmt_datetime
from app.query import Query, now_ms  # the one "now" of every page
from common.events import Cascade
from common.instruments import guess_instrument
from common.live_view import (
    BUCKET_MS,
    COLLECTOR_STALE_MS,
    WINDOW_MS,
    Keys,
    decode_cascade,
    decode_liquidation,
    limbs_to_decimal,
)

EVENT_COLUMNS = ["time_ms", "exchange", "symbol", "side", "quantity", "price", "value_usd", "source", "sampled"]
LATEST_ROWS = 200
MAX_SCAN = 10_000  # raw members read at most for the latest rows of a rare selection
_PAGE = 500
_PRECISION = 120  # sums of exact amounts: no rounding at Decimal's default 28 digits


@dataclass
class LiveSnapshot:
    now_ms: int
    events: pd.DataFrame  # EVENT_COLUMNS, the latest rows of the selection, newest first
    totals: Breakdown
    cascades: list[Cascade]  # active or ended within the window, matching the filters
    health: dict[str, dict[str, Any]]  # exchange -> StreamHealth.snapshot()
    collector: dict[str, Any] | None  # the collector's state JSON, None when missing
    sources: set[str] = field(default_factory=set)  # sources seen in the window (all symbols)
    members_read: int = 0  # raw members fetched from Redis (edges + latest rows)
    latest_complete: bool = True  # False: MAX_SCAN members held fewer than `latest` rows of the selection

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


@dataclass
class _Group:
    events: int = 0
    quantity: dict[int, int] = field(default_factory=dict)
    usd: dict[int, int] = field(default_factory=dict)
    largest: Decimal | None = None


class _Sums:
    """Aggregate hashes folded per group [exchange, side, source]."""

    def __init__(self) -> None:
        self.groups: dict[bytes, _Group] = {}
        self._names: dict[bytes, tuple[str, str, str]] = {}

    def name(self, group: bytes) -> tuple[str, str, str]:
        found = self._names.get(group)
        if found is None:
            exchange, side, source = json.loads(group)
            found = self._names[group] = (str(exchange), str(side), str(source))
        return found

    def add_hash(self, raw: dict[bytes, bytes]) -> None:
        for f, value in raw.items():
            cut = f.rfind(b"]") + 1
            group, kind = f[:cut], f[cut:]
            g = self.groups.get(group)
            if g is None:
                g = self.groups[group] = _Group()
            if kind == b"n":
                g.events += int(value)
            elif kind == b"x":
                largest = Decimal(value.decode())
                if g.largest is None or largest > g.largest:
                    g.largest = largest
            else:
                limbs = g.quantity if kind[:1] == b"q" else g.usd
                k = int(kind[1:])
                limbs[k] = limbs.get(k, 0) + int(value)


def _bucket_range(lo: int, hi: int) -> tuple[int, int]:
    """[first, end): the buckets that lie entirely inside [lo, hi]."""
    first = -(-lo // BUCKET_MS) * BUCKET_MS
    end = (hi + 1) // BUCKET_MS * BUCKET_MS
    return first, max(first, end)


def snapshot(
    client: redis.Redis,
    keys: Keys,
    q: Query,
    now: int | None = None,
    latest: int = LATEST_ROWS,
) -> LiveSnapshot:
    """Everything the live page shows for the query (its target, venues, side and sources; its
    minimum size applies to the latest rows, app.query.MIN_USD_RULE): one pipeline, plus more
    pages of rows for a rare selection. The window is [now - 60 min, now] whatever the query's range."""
    now = now_ms() if now is None else now
    lo, hi = now - WINDOW_MS, now
    first, end = _bucket_range(lo, hi)
    buckets = range(first, end, BUCKET_MS)
    symbols: tuple[str | None, ...] = (None,) if q.symbols is None else q.symbols
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        for b in buckets:
            for symbol in symbols:
                pipe.hgetall(keys.agg_key(b, symbol))
        pipe.zrangebyscore(keys.sources, lo, "+inf")  # sources with liquidations in the window, all symbols
        pipe.zrangebyscore(keys.liqs, lo, first - 1)
        pipe.zrangebyscore(keys.liqs, end, hi)
        pipe.zrevrangebyscore(keys.liqs, hi, lo, start=0, num=_PAGE, withscores=True)
        pipe.hgetall(keys.cascades)
        pipe.hgetall(keys.health)
        pipe.hget(keys.collector, "state")
        replies = pipe.execute()
    n = len(buckets) * len(symbols)
    per_symbol = [_Sums() for _ in symbols]  # one per symbol: quantities are converted per contract
    for i, raw in enumerate(replies[:n]):
        per_symbol[i % len(symbols)].add_hash(raw)
    source_names, low_edge, high_edge, page, cascades_raw, health_raw, collector_raw = replies[n:]
    wanted = set(q.venues)
    match = _matcher(q)

    out = Breakdown()
    sources = {s.decode() for s in source_names}
    with localcontext(prec=_PRECISION):
        for symbol, sums in zip(symbols, per_symbol, strict=True):
            for group, g in sums.groups.items():
                exchange, side, source = sums.name(group)
                if exchange in wanted and g.events and match(None, side, source):
                    quantity = limbs_to_decimal(g.quantity)
                    if symbol is not None:  # one coin: its canonical base (1000PEPE counts 1000 PEPE)
                        quantity = guess_instrument(exchange, symbol).canonical_quantity(quantity)
                    out.add(exchange, side, g.events, quantity, limbs_to_decimal(g.usd))
                    _largest(out, g.largest)
        for member in (*low_edge, *high_edge):
            ev = decode_liquidation(member)
            sources.add(ev["source"])
            if ev["exchange"] in wanted and match(ev["symbol"], str(ev["side"]), ev["source"]):
                quantity = guess_instrument(ev["exchange"], ev["symbol"]).canonical_quantity(ev["quantity"])
                out.add(ev["exchange"], str(ev["side"]), 1, quantity, ev["value_usd"])
                _largest(out, ev["value_usd"])

    rows, read, complete = _latest_rows(client, keys, page, q, lo, hi, latest)
    events = pd.DataFrame(rows, columns=EVENT_COLUMNS)

    cascades = []
    # Cascades are stored under the canonical instrument (BTC-USDT-PERP), older ones under the venue symbol.
    listed = cascade_names_of(q)
    names = None if listed is None else set(listed)
    for raw in cascades_raw.values():
        c = decode_cascade(raw)
        in_window = c.active or c.end_ms >= lo
        if (
            in_window
            and (names is None or c.symbol in names)
            and any(e in wanted for e in c.counts)
            and (q.side is None or str(c.side) == q.side)
            and (q.include_nonlive or c.source == "live")
            and c.value_usd >= q.min_usd
        ):
            cascades.append(c)
    cascades.sort(key=lambda c: (not c.active, -c.end_ms))

    health = {}
    for exchange, raw in health_raw.items():
        name = exchange.decode() if isinstance(exchange, bytes) else str(exchange)
        health[name] = json.loads(raw)
    collector = json.loads(collector_raw) if collector_raw else None
    members_read = len(low_edge) + len(high_edge) + read
    return LiveSnapshot(now, events, out, cascades, health, collector, sources, members_read, complete)


def _largest(out: Breakdown, usd: Decimal | None) -> None:
    if usd is not None and (out.max_usd is None or usd > out.max_usd):
        out.max_usd = usd


def _matcher(q: Query) -> Callable[[str | None, str, str], bool]:
    """Whether a (symbol or None for an already-selected hash, side, source) matches the query."""
    symbols = None if q.symbols is None else set(q.symbols)

    def match(symbol: str | None, side: str, source: str) -> bool:
        return (
            (symbol is None or symbols is None or symbol in symbols)
            and (q.side is None or side == q.side)
            and (q.include_nonlive or source == "live")
        )

    return match


def _latest_rows(
    client: redis.Redis,
    keys: Keys,
    page: list[tuple[bytes, float]],
    q: Query,
    lo: int,
    hi: int,
    latest: int,
) -> tuple[list[list[Any]], int, bool]:
    """The newest `latest` members of the selection, newest first; members read; whether complete.

    Pages go down by score (keyset: the last score seen, skipping the members already read at it),
    so members that arrive meanwhile neither repeat nor hide rows."""
    rows: list[list[Any]] = []
    read = skip = 0
    last = float(hi) + 1
    wanted = set(q.venues)
    symbols = None if q.symbols is None else set(q.symbols)
    match = _matcher(q)
    while True:
        read += len(page)
        for member, _score in page:
            d = json.loads(member)
            if d[1] in wanted and (symbols is None or d[2] in symbols):
                ev = decode_liquidation(member)
                if not match(None, str(ev["side"]), ev["source"]) or ev["value_usd"] < q.min_usd:
                    continue
                rows.append([ev[c] if c != "side" else str(ev["side"]) for c in EVENT_COLUMNS])
                if len(rows) == latest:
                    return rows, read, True
        if len(page) < _PAGE:
            return rows, read, True  # the whole window was seen
        if read >= MAX_SCAN:
            return rows, read, False
        score = page[-1][1]
        seen = sum(1 for _m, s in page if s == score)
        skip = skip + seen if score == last else seen  # members read so far at that score
        last = score
        with redis_errors():
            page = client.zrevrangebyscore(keys.liqs, last, lo, start=skip, num=_PAGE, withscores=True)


# --- Instruments, topics and connections per venue ---------------------------------------------------

SHOWN_ITEMS = 10  # refused topics / unlisted symbols named at most, per venue, in a cell or an alert


def _int(x: object) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _num(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


@dataclass
class VenueInstruments:
    """What the collector reports about one venue's instruments and topics. `catalog` / `stream`
    say which part was reported (older collectors report neither: nothing is shown)."""

    exchange: str
    catalog: bool = False  # the collector state's "instruments" entry for this venue
    stream: bool = False  # the stream health carried topic counts
    tracked: int | None = None  # symbols followed (catalog), else the stream's own count
    listed: int | None = None  # instruments the venue lists
    candles: int | None = None
    source: str | None = None  # "rest" | "database" | "none"
    last_refresh_ms: int | None = None
    stored_ms: int | None = None
    error: str = ""
    failures: int | None = None
    next_attempt_s: float | None = None
    unlisted: list[str] = field(default_factory=list)  # configured symbols the venue does not list
    skipped: dict[str, int] = field(default_factory=dict)  # listed instruments skipped, by reason
    connections: int | None = None
    topics: int | None = None
    refused: dict[str, str] = field(default_factory=dict)  # topic -> the venue's reason

    @property
    def problem(self) -> str | None:
        """Collecting nothing (or unverified) for lack of any list: an error, in plain text."""
        if self.source != "none":
            return None
        text = "no instrument list: collecting nothing for ALL"
        if self.tracked:
            text += f"; the {self.tracked} configured symbols are collected unverified"
        return text

    @property
    def warning(self) -> str | None:
        """Running on the list stored in TimescaleDB: a warning, in plain text."""
        if self.source != "database":
            return None
        when = fmt_datetime(self.stored_ms) if self.stored_ms else "unknown time"
        return f"REST unreachable: running on the stored list of {when}"

    def json(self) -> dict[str, Any]:
        """The reported parts, JSON-ready (times also as YYYYMMDD HH:MM:SS UTC)."""
        out: dict[str, Any] = {}
        if self.catalog:
            out.update(
                tracked=self.tracked,
                instruments=self.listed,
                candles=self.candles,
                source=self.source,
                last_refresh_ms=self.last_refresh_ms,
                last_refresh=fmt_datetime(self.last_refresh_ms) if self.last_refresh_ms else None,
                stored_ms=self.stored_ms or None,
                stored=fmt_datetime(self.stored_ms) if self.stored_ms else None,
                error=self.error,
                failures=self.failures,
                next_attempt_s=self.next_attempt_s,
                unlisted=self.unlisted,
                skipped=self.skipped,
                problem=self.problem,
                warning=self.warning,
            )
        if self.stream:
            out.update(connections=self.connections, topics=self.topics, refused_topics=self.refused)
            if not self.catalog:
                out["tracked"] = self.tracked
        return out


def venue_instruments(
    collector: dict[str, Any] | None, health: dict[str, dict[str, Any]], exchanges: Sequence[str]
) -> list[VenueInstruments]:
    """One entry per selected venue that reported anything; malformed values count as absent."""
    catalog = (collector or {}).get("instruments")
    catalog = catalog if isinstance(catalog, dict) else {}
    out = []
    for exchange in exchanges:
        v = VenueInstruments(exchange)
        c = catalog.get(exchange)
        if isinstance(c, dict):
            v.catalog = True
            v.tracked, v.listed, v.candles = _int(c.get("tracked")), _int(c.get("instruments")), _int(c.get("candles"))
            v.source = str(c["source"]) if c.get("source") is not None else None
            v.last_refresh_ms, v.stored_ms = _int(c.get("last_refresh_ms")), _int(c.get("stored_ms"))
            v.error = str(c.get("error") or "")
            v.failures, v.next_attempt_s = _int(c.get("failures")), _num(c.get("next_attempt_s"))
            unlisted = c.get("unlisted")
            v.unlisted = [str(s) for s in unlisted] if isinstance(unlisted, list) else []
            skipped = c.get("skipped")
            v.skipped = {str(k): n for k, n in skipped.items() if _int(n)} if isinstance(skipped, dict) else {}
        h = health.get(exchange) or {}
        if any(k in h for k in ("connections", "topics", "refused_topics", "instruments")):
            v.stream = True
            v.connections, v.topics = _int(h.get("connections")), _int(h.get("topics"))
            refused = h.get("refused_topics")
            v.refused = {str(k): str(r) for k, r in refused.items()} if isinstance(refused, dict) else {}
            if v.tracked is None:
                v.tracked = _int(h.get("instruments"))
        if v.catalog or v.stream:
            out.append(v)
    return out


def stream_age_s(h: dict[str, Any], now: int) -> float | None:
    """Seconds since the stream's last message, from our clock (the snapshot may itself be old)."""
    last = h.get("last_message_ms")
    return None if last is None else max(0.0, (now - int(last)) / 1000)
