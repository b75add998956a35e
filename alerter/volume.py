"""Exact liquidated USD over the last N minutes, for `volume` rules, read from the live view.

The collector keeps in Redis the sums of every liquidation per 10-second bucket, for all symbols
and per symbol, written by the same script call that stores the event's member, which counts a
member only once (common/live_view.py). So these sums hold every liquidation, whatever
LIQ_ALERT_STREAM_MIN_USD lets into the stream, and count once a liquidation that two collectors
both wrote. A rule's window [now - N min, now] is read as:
- the whole buckets from the first one starting inside the window up to the newest one (read
  whole: it holds nothing later than now but a venue clock a little ahead of ours);
- the members of the partial bucket at the window's start, one by one.

Coin and contract rules read the per-symbol hashes of the symbols that match. Which symbols have a
hash in which bucket comes from the registry `{p}live:aggkeys`, kept in memory: each tick counts
the registry's keys in the window (ZCOUNT) and reads it only when the count differs from what is
known, first from RECENT_MS before the newest bucket read, then whole if that was not enough (a key
written late, after a Redis outage). A busy market costs a count and a short range a tick, not the
hour's thousands of keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from alerter.rules import Rule
from common.live_view import (
    BUCKET_MS,
    Keys,
    bucket_of,
    decode_liquidation,
    group_of_text,
    limbs_to_decimal,
    symbol_of_text,
)
from common.venues import NAMES

RECENT_MS = 30_000  # a changed key list is first re-read from this far before the newest bucket read


@dataclass(frozen=True)
class WindowSum:
    """What a rule's window holds: USD, liquidations, the venues that had any, and the period."""

    usd: Decimal
    events: int
    venues: tuple[str, ...]
    start_ms: int
    end_ms: int


@dataclass
class _Acc:
    events: int = 0
    usd: dict[int, int] = field(default_factory=dict)  # limbs (common/live_view.py)
    extra: Decimal = Decimal(0)  # members of the partial bucket
    venues: set[str] = field(default_factory=set)


def _wants(rule: Rule, exchange: str, symbol: str | None, side: str, source: str) -> bool:
    return (
        rule.wants_venue(exchange)
        and rule.wants_side(side)
        and rule.wants_source(source)
        and (symbol is None or rule.wants_liquidation(exchange, symbol))
    )


class VolumeReader:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis  # decode_responses=True
        self.keys = Keys(prefix)
        self._index: dict[int, set[str]] = {}  # bucket -> symbol texts of its hashes ("": all symbols)
        self._read_to: int | None = None  # newest bucket at the last key-list read
        self._matches: dict[tuple[str, str], bool] = {}  # (rule, symbol text) -> may match
        self.keys_read = 0  # hashes read at the last tick (tests, logs)

    async def built(self) -> bool:
        """False while the collector rebuilds the view (after a Redis flush): sums would be short."""
        return bool(await self.redis.exists(self.keys.built))

    async def sums(self, rules: Iterable[Rule], now: int) -> dict[str, WindowSum]:
        """Each volume rule's window sum at `now`, by rule name."""
        rules = [r for r in rules if r.kind == "volume"]
        if not rules:
            return {}
        newest = bucket_of(now)
        spans = {r.name: _span_ms(r) for r in rules}
        if any(r.coin is not None or r.contract is not None for r in rules):
            await self._refresh_index(now - max(spans.values()), newest)
        plans: dict[str, tuple[int, int, list[tuple[str, str | None]]]] = {}
        wanted: dict[str, None] = {}  # every hash to read, once
        edges: dict[tuple[int, int], None] = {}
        for rule in rules:
            start = now - spans[rule.name]
            first = -(-start // BUCKET_MS) * BUCKET_MS  # the first bucket that starts inside the window
            hashes: list[tuple[str, str | None]] = []
            for b in range(first, newest + BUCKET_MS, BUCKET_MS):
                if rule.coin is None and rule.contract is None:
                    hashes.append((self.keys.agg_key(b), None))
                else:
                    for text in self._index.get(b, ()):
                        if text and self._maybe(rule, text):
                            hashes.append((f"{self.keys.agg}{b}:{text}", symbol_of_text(text)))
            for key, _ in hashes:
                wanted[key] = None
            if start < first:
                edges[(start, first - 1)] = None
            plans[rule.name] = (start, first, hashes)
        pipe = self.redis.pipeline(transaction=False)
        for key in wanted:
            pipe.hgetall(key)
        for lo, hi in edges:
            pipe.zrangebyscore(self.keys.liqs, lo, hi)
        replies = await pipe.execute()
        self.keys_read = len(wanted)
        values = dict(zip(wanted, replies[: len(wanted)], strict=True))
        members = dict(zip(edges, replies[len(wanted) :], strict=True))
        out: dict[str, WindowSum] = {}
        for rule in rules:
            start, first, hashes = plans[rule.name]
            acc = _Acc()
            for name, of_symbol in hashes:
                _fold(rule, values[name], of_symbol, acc)
            for member in members.get((start, first - 1), ()):
                ev = decode_liquidation(member)
                if _wants(rule, ev["exchange"], ev["symbol"], str(ev["side"]), ev["source"]):
                    acc.events += 1
                    acc.extra += ev["value_usd"]
                    acc.venues.add(ev["exchange"])
            usd = limbs_to_decimal(acc.usd) + acc.extra
            out[rule.name] = WindowSum(usd, acc.events, tuple(sorted(acc.venues)), start, now)
        return out

    def _maybe(self, rule: Rule, text: str) -> bool:
        """Whether a symbol's hashes may hold the rule's coin or contract on one of its venues (the
        groups inside name the venue, checked exactly when folding); remembered per rule."""
        key = (rule.name, text)
        hit = self._matches.get(key)
        if hit is None:
            if len(self._matches) > 200_000:
                self._matches.clear()
            symbol = symbol_of_text(text)
            hit = self._matches[key] = any(rule.wants_liquidation(v, symbol) for v in (rule.venues or NAMES))
        return hit

    async def _refresh_index(self, start: int, newest: int) -> None:
        """Bring the key list of [start's bucket, ...) up to date: nothing to read while the registry
        counts as many keys there as the index knows (keys are only added inside the window)."""
        lo = bucket_of(start)
        for b in [b for b in self._index if b < lo]:
            del self._index[b]
        for attempt in ("recent", "full"):
            registered = await self.redis.zcount(self.keys.agg_keys, lo, "+inf")
            if registered == sum(len(texts) for texts in self._index.values()):
                break
            since = lo if attempt == "full" or self._read_to is None else max(lo, self._read_to - RECENT_MS)
            rows: list[tuple[str, float]] = await self.redis.zrangebyscore(
                self.keys.agg_keys, since, "+inf", withscores=True
            )
            if attempt == "full":
                self._index = {}
            for suffix, score in rows:
                # "<b>" (all symbols, kept as "") or "<b>:<symbol text>"
                self._index.setdefault(int(score), set()).add(suffix.partition(":")[2])
            self._read_to = newest


def _span_ms(rule: Rule) -> int:
    return int((rule.minutes or 1) * 60_000)


def _fold(rule: Rule, raw: dict[str, str], symbol: str | None, acc: _Acc) -> None:
    """Add one aggregate hash (fields `<group><kind>`, common/live_view.py) to the rule's sum."""
    for f, value in raw.items():
        cut = f.rfind("]") + 1
        kind = f[cut:]
        if kind[:1] not in ("n", "u"):
            continue  # quantities (coins do not add up) and the largest
        exchange, side, source = group_of_text(f[:cut])
        if not _wants(rule, exchange, symbol, side, source):
            continue
        if kind == "n":
            if int(value):
                acc.events += int(value)
                acc.venues.add(exchange)
        else:
            k = int(kind[1:])
            acc.usd[k] = acc.usd.get(k, 0) + int(value)


def describe(s: WindowSum) -> dict[str, Any]:
    """The alert row's event: plain JSON values."""
    return {
        "total_usd": str(s.usd),
        "events": s.events,
        "venues": list(s.venues),
        "from_ms": s.start_ms,
        "to_ms": s.end_ms,
    }
