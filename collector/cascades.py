"""Cascade detection: same-side liquidations of one symbol in quick succession. Pure logic, no I/O.

Rule. For each (symbol, side) the detector keeps the liquidations of the last `window_s` seconds
(exchange time). The window qualifies when its *weighted* event count reaches `min_events` AND its
USD value reaches `min_usd`. Every event in the window then becomes a member of a new cascade, and
every later same-side event of that symbol joins it, until the stream has been quiet for
`window_s` (no same-side event for that long, by exchange time or by wall clock), which ends it.

Binance weighting. Binance pushes at most one liquidation per symbol per second (the latest of
that second), so one Binance event stands for one or more liquidations, while Bybit's tape is
complete. A Binance (`sampled`) event therefore counts `SAMPLED_WEIGHT` = 2 towards `min_events`
(with the default 5, three Binance events in a minute qualify: three distinct busy seconds); a
Bybit event counts 1. USD always counts at face value. Stored counts are real event counts.

Risk score, 0-100, the sum of four parts, each clamped:
    size      0-40  40 * log10(usd / min_usd) / 2          (the threshold gives 0, 100x gives 40)
    speed     0-30  30 * weighted events per second / 2     (2 weighted events/s or more gives 30)
    one-sided 0-20  20 * (2 * share - 1), share = this side's USD / both sides' USD of the symbol
                    during the cascade (an equal mix gives 0, one side only gives 20)
    cross     0-10  10 when two or more exchanges took part
Ids are stable (a hash of symbol, side and first member key), so a replay rewrites the same row.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from common.events import Cascade, Liquidation, Side

log = logging.getLogger("collector.cascades")

SAMPLED_WEIGHT = 2
_MINUTE_MS = 60_000
# The ring per (symbol, side) before a cascade: a window holding this many events has long qualified
# on count, so older ones only matter for USD; the bound keeps memory small under floods.
_RING_MAX = 5_000


def cascade_id(symbol: str, side: Side | str, first_key: int) -> int:
    """A stable signed 63-bit id: the same first member always gives the same cascade row."""
    digest = hashlib.blake2b(f"{symbol}|{side}|{first_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True) >> 1


def event_weight(ev: Liquidation) -> int:
    return SAMPLED_WEIGHT if ev.sampled else 1


def risk_score(
    value_usd: Decimal,
    min_usd: Decimal,
    weighted_events: int,
    duration_ms: int,
    opposite_usd: Decimal,
    exchanges: int,
) -> int:
    """The documented 0-100 score (see the module docstring)."""
    ratio = float(value_usd / max(min_usd, Decimal(1)))
    size = 40.0 * min(1.0, max(0.0, math.log10(ratio) / 2)) if ratio > 0 else 0.0
    rate = weighted_events / max(duration_ms / 1000, 1.0)
    speed = 30.0 * min(1.0, rate / 2)
    total = value_usd + opposite_usd
    share = float(value_usd / total) if total > 0 else 1.0
    one_sided = 20.0 * min(1.0, max(0.0, 2 * share - 1))
    cross = 10.0 if exchanges >= 2 else 0.0
    return max(0, min(100, round(size + speed + one_sided + cross)))


@dataclass
class _Active:
    cascade: Cascade
    members: set[int]
    weighted: int
    minute_usd: dict[int, Decimal]
    first_time_ms: int
    last_time_ms: int
    last_received_ms: int
    opposite_usd: Decimal = Decimal(0)
    announced_cross: bool = False


@dataclass
class CascadeUpdate:
    """What one batch changed: cascades to upsert, earlier members to flag, console lines."""

    cascades: list[Cascade] = field(default_factory=list)
    flags: list[tuple[int, int, int]] = field(default_factory=list)  # (cascade id, event key, time ms)
    lines: list[str] = field(default_factory=list)


class CascadeDetector:
    def __init__(self, window_s: int, min_events: int, min_usd: Decimal) -> None:
        self.window_ms = window_s * 1000
        self.min_events = min_events
        self.min_usd = min_usd
        self._recent: dict[tuple[str, Side], deque[Liquidation]] = {}
        self._recent_keys: dict[tuple[str, Side], set[int]] = {}
        self._active: dict[tuple[str, Side], _Active] = {}
        self._sums: dict[tuple[str, Side], tuple[int, Decimal]] = {}  # weighted count, USD of _recent
        self._clock_ms = 0  # latest exchange time seen
        self._batch_keys: set[int] = set()
        self._announce: dict[int, Cascade] = {}

    @property
    def active(self) -> list[Cascade]:
        return [a.cascade for a in self._active.values()]

    def process(self, events: list[Liquidation], now_ms: int) -> CascadeUpdate:
        """Feed one batch (any order within it); members get `cascade_id` set in place."""
        update = CascadeUpdate()
        changed: dict[int, Cascade] = {}
        self._batch_keys = {e.key for e in events}
        self._announce = {}
        self._end_quiet(changed, now_ms)
        for ev in sorted(events, key=lambda e: e.time_ms):
            self._clock_ms = max(self._clock_ms, ev.time_ms)
            self._feed(ev, update, changed)
        self._end_quiet(changed, now_ms)
        for active in self._active.values():
            if active.cascade.id in changed:
                self._score(active)
        # one console line per cascade and batch, with its state at the end of the batch
        update.lines.extend(_detected_line(c) for c in self._announce.values())
        update.cascades.extend(changed.values())
        return update

    def tick(self, now_ms: int) -> CascadeUpdate:
        """End cascades that went quiet by wall clock; call about once a second."""
        return self.process([], now_ms)

    def close_all(self) -> list[Cascade]:
        """Shutdown: end every active cascade (a restart cannot continue them)."""
        changed: dict[int, Cascade] = {}
        for slot, active in list(self._active.items()):
            self._end(slot, active, changed)
        return list(changed.values())

    def _feed(self, ev: Liquidation, update: CascadeUpdate, changed: dict[int, Cascade]) -> None:
        slot = (ev.symbol, ev.side)
        other = self._active.get((ev.symbol, Side.SHORT if ev.side == Side.LONG else Side.LONG))
        if other is not None and ev.time_ms >= other.first_time_ms:
            other.opposite_usd += ev.value_usd
        active = self._active.get(slot)
        if active is not None and ev.time_ms - active.last_time_ms > self.window_ms:
            self._end(slot, active, changed)  # quiet for a window by exchange time: this one starts afresh
            active = None
        if active is not None and ev.time_ms < active.first_time_ms - self.window_ms:
            return  # from before this cascade's window, arriving late (another venue's socket lagged): not a member
        if active is not None:
            if ev.key in active.members:
                return  # re-delivered event
            self._join(active, ev, update)
            changed[active.cascade.id] = active.cascade
            return
        recent = self._recent.setdefault(slot, deque())
        keys = self._recent_keys.setdefault(slot, set())
        if ev.key in keys:
            return
        weighted, usd = self._sums.get(slot, (0, Decimal(0)))
        recent.append(ev)
        keys.add(ev.key)
        weighted, usd = weighted + event_weight(ev), usd + ev.value_usd
        while recent and (recent[0].time_ms < ev.time_ms - self.window_ms or len(recent) > _RING_MAX):
            old = recent.popleft()
            keys.discard(old.key)
            weighted, usd = weighted - event_weight(old), usd - old.value_usd
        self._sums[slot] = (weighted, usd)
        if weighted < self.min_events or usd < self.min_usd:
            return
        members = sorted(recent, key=lambda e: (e.time_ms, e.key))
        recent.clear()
        keys.clear()
        self._sums[slot] = (0, Decimal(0))
        first = members[0]
        cascade = Cascade(
            id=cascade_id(ev.symbol, ev.side, first.key),
            symbol=ev.symbol,
            side=ev.side,
            start_ms=first.time_ms,
            end_ms=first.time_ms,
            count=0,
            quantity=Decimal(0),
            value_usd=Decimal(0),
            price_start=first.price,
            source=first.source,
        )
        active = _Active(cascade, set(), 0, {}, first.time_ms, first.time_ms, first.received_ms)
        self._active[slot] = active
        for member in members:
            self._join(active, member, update)
        changed[cascade.id] = cascade
        self._announce[cascade.id] = cascade

    def _join(self, active: _Active, ev: Liquidation, update: CascadeUpdate) -> None:
        c = active.cascade
        active.members.add(ev.key)
        ev.cascade_id = c.id
        if ev.key not in self._batch_keys:  # handed to the writers with an earlier batch
            update.flags.append((c.id, ev.key, ev.time_ms))
        c.count += 1
        c.quantity += ev.quantity
        c.value_usd += ev.value_usd
        c.counts[ev.exchange] = c.counts.get(ev.exchange, 0) + 1
        active.weighted += event_weight(ev)
        minute = ev.time_ms - ev.time_ms % _MINUTE_MS
        usd = active.minute_usd[minute] = active.minute_usd.get(minute, Decimal(0)) + ev.value_usd
        peak = active.minute_usd.get(c.peak_minute_ms)
        if peak is None or usd > peak or (usd == peak and minute < c.peak_minute_ms):
            c.peak_minute_ms = minute
        if ev.time_ms < active.first_time_ms:
            active.first_time_ms = ev.time_ms
            c.price_start = ev.price
        if ev.time_ms >= active.last_time_ms:
            active.last_time_ms = ev.time_ms
            c.price_end = ev.price
        active.last_received_ms = max(active.last_received_ms, ev.received_ms)
        c.start_ms, c.end_ms = active.first_time_ms, active.last_time_ms
        if c.cross_exchange and not active.announced_cross:
            active.announced_cross = True
            self._announce[c.id] = c

    def _score(self, active: _Active) -> None:
        c = active.cascade
        c.risk_score = risk_score(
            c.value_usd, self.min_usd, active.weighted, c.end_ms - c.start_ms, active.opposite_usd, len(c.counts)
        )

    def _end_quiet(self, changed: dict[int, Cascade], now_ms: int) -> None:
        for slot, active in list(self._active.items()):
            quiet_by_data = self._clock_ms - active.last_time_ms > self.window_ms
            quiet_by_clock = now_ms - active.last_received_ms > self.window_ms
            if quiet_by_data or quiet_by_clock:
                self._end(slot, active, changed)

    def _end(self, slot: tuple[str, Side], active: _Active, changed: dict[int, Cascade]) -> None:
        del self._active[slot]
        self._score(active)
        active.cascade.active = False
        changed[active.cascade.id] = active.cascade


def _usd(value: Decimal) -> str:
    return f"${value:,.0f}"


def _detected_line(c: Cascade) -> str:
    if c.cross_exchange:
        return f"CROSS-EXCHANGE CASCADE DETECTED: {c.count} liquidations | {_usd(c.value_usd)}"
    exchange = next(iter(c.counts), "").upper()
    return f"CASCADE DETECTED: {exchange} {c.symbol} {c.side} {c.count} liquidations | {_usd(c.value_usd)}"
