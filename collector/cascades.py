"""Cascade detection: same-side liquidations of one instrument in quick succession. Pure logic, no I/O.

Join. Events are grouped by (canonical instrument, side): a resolver maps each event to its
`common.instruments.Instrument` (by default `guess_instrument(exchange, symbol)`; the service may
pass the venues' own lists), so Binance `BTCUSDT`, Bybit `BTCUSDT` and OKX `BTC-USDT-SWAP` form one
cascade of `BTC-USDT-PERP`. A cascade's `symbol` is that canonical name, its `quantity` the sum of
the members' sizes in the canonical base asset (`Instrument.canonical_quantity`: the 1000 of
`1000PEPEUSDT` applied to sizes the adapters already turned from contracts into base units, so
different multipliers are never summed raw; `usd` keeps each venue's USD, its share of the cascade) and its
prices are per canonical base unit (`Instrument.base_price`).

Rule `relative` (the default; LIQ_CASCADE_RULE). For each (instrument, side) the detector keeps
the events of the last `window_s` seconds (exchange time) that belong to no cascade. The window
qualifies when
- its *weighted* event count reaches `min_events` (5), and
- its USD reaches T = max(`min_usd`, `relative_x` x B): the floor ($20,000) or 10 times B,
  whichever is higher. B, the instrument's baseline, is its USD per window over the trailing 24 h:
  every venue and both sides of the 1,440 whole minutes before the current one, divided by the
  minutes of history the detector holds (at least `warmup_minutes`, 30; at most 1,440), scaled to
  `window_s`. Both sides, because a one-sided burst is judged against all of the coin's normal
  flow: a steadier figure than one side's (twice the sample) for half the memory, and in a
  trending market the side of the move is most of it anyway.
Every event of the window then becomes a member of a new cascade, and every later same-side event
joins it, until the first of:
- quiet: no same-side event for `window_s` (by exchange time, or by wall clock for a feed that
  stopped);
- back to normal: the same-side USD of the last `window_s` is below `end_x` x B (3 x B; checked
  just before each new event, and at every batch and tick);
- the cap: an event more than `max_s` (900 s) after the first member, or the data clock past it.
  That event starts a fresh window: a burst that goes on is recorded as consecutive cascades,
  none longer than `max_s`.
An event from another venue's lagging socket, up to `window_s` older than the first member, still
joins, unless it would stretch the cascade past `max_s`.
The baseline is learnt from the events the detector sees (per instrument a ring of 1,441 per-minute
cent counters, 11.5 KB, whatever the flow) and can be seeded at start from stored per-minute
totals (`seed_baseline`). Without a seed, B divides what was seen by at least `warmup_minutes`, so
thresholds start lower than they will be (at worst the floor alone) during the first minutes.
Re-deliveries count once while they are in the window (or the cascade) they belong to.

Rule `fixed` (the original). T = `min_usd` ($100,000 unless set); a cascade ends only when quiet;
no cap, no baseline.

Binance weighting. Binance pushes at most one liquidation per symbol per second (the latest of
that second), so one Binance event stands for one or more liquidations, while Bybit's tape is
complete. A `sampled` event therefore counts `SAMPLED_WEIGHT` = 2 towards `min_events` (with the
default 5, three Binance events in a window qualify: three distinct busy seconds); a complete-tape
event counts 1. USD always counts at face value, in the thresholds and in the baseline. Stored
counts are real event counts.

Risk score, 0-100, the sum of four parts, each clamped (T is the threshold the cascade started at):
    size      0-40  40 * log10(usd / T) / 2                 (the threshold gives 0, 100x gives 40)
    speed     0-30  30 * weighted events per second / 2     (2 weighted events/s or more gives 30)
    one-sided 0-20  20 * (2 * share - 1), share = this side's USD / both sides' USD of the instrument
                    during the cascade (an equal mix gives 0, one side only gives 20)
    cross     0-10  10 when two or more exchanges took part
Ids are stable (a hash of the first member's venue symbol, side and key), so a replay of the same
events with the same history rewrites the same row.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import logging
import math
import operator
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from common.events import LONG, OPPOSITE, SHORT, Cascade, Liquidation, Side
from common.instruments import Instrument, guess_instrument

if TYPE_CHECKING:
    from common.config import Settings

log = logging.getLogger("collector.cascades")

SAMPLED_WEIGHT = 2
FIXED = "fixed"
RELATIVE = "relative"
RULES = (RELATIVE, FIXED)
WARMUP_MINUTES = 30
DAY_MINUTES = 1_440
_SPAN = DAY_MINUTES + 1  # ring slots: the 1,440 whole minutes of the baseline and the current one
_ZEROS = array("q", bytes(8 * _SPAN))
_MINUTE_MS = 60_000
_ONE = Decimal(1)
_ZERO = Decimal(0)
# The pending window per (instrument, side): a window holding this many events has long qualified
# on count, so older ones only matter for USD; the bound keeps memory small under floods.
_RING_MAX = 5_000
_TIME = operator.attrgetter("time_ms")  # an event's exchange time: the order of a window
_NEVER = 2**63  # no check queued
# `_schedule` walks at most this many recent members: a busy cascade holds hundreds, and the check
# it schedules when these have left walks on from there.
_WALK_MAX = 64
# The walk reads float copies of the members' USD and decides exactly (the Decimal walk) only when a
# sum lands within this fraction of the window's USD of the line: float error is ~1e-14 of it.
_WALK_MARGIN = 1e-9

InstrumentResolver = Callable[[Liquidation], Instrument]


def guess_resolver(ev: Liquidation) -> Instrument:
    """The default resolver: the instrument the venue symbol spells (`common.instruments`)."""
    return guess_instrument(ev.exchange, ev.symbol)


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
    """The documented 0-100 score (see the module docstring); `min_usd` is the threshold T.

    Each changed cascade is scored once a batch (most of them, in a market-wide burst), so the
    clamps are comparisons rather than min()/max() calls: the same floats, about half the time."""
    ratio = float(value_usd / (min_usd if min_usd > _ONE else _ONE))
    size = 0.0
    if ratio > 0:
        part = math.log10(ratio) / 2
        size = 40.0 * (1.0 if part > 1.0 else part if part > 0.0 else 0.0)
    seconds = duration_ms / 1000
    rate = weighted_events / (seconds if seconds > 1.0 else 1.0)
    half = rate / 2
    speed = 30.0 * (half if half < 1.0 else 1.0)
    share = 1.0  # one side only (or nothing at all): value / value is exactly 1
    if opposite_usd:
        total = value_usd + opposite_usd
        share = float(value_usd / total) if total > 0 else 1.0
    excess = 2 * share - 1
    one_sided = 20.0 * (1.0 if excess > 1.0 else excess if excess > 0.0 else 0.0)
    cross = 10.0 if exchanges >= 2 else 0.0
    score = round(size + speed + one_sided + cross)
    return 0 if score < 0 else 100 if score > 100 else score


class _Baseline:
    """One instrument's USD per minute (cents, both sides, every venue): the current minute and the
    1,440 before it in a fixed ring of 64-bit counters, so memory never grows with time or flow."""

    __slots__ = ("cents", "head", "total", "cached_minute", "cached", "instrument", "changed")

    def __init__(self, instrument: str, changed: set[str]) -> None:
        self.cents = array("q", bytes(8 * _SPAN))
        self.head = -1  # the newest minute (since the epoch) the ring holds; -1 while empty
        self.total = 0  # cents in the ring
        self.cached_minute = -1  # the per-window baseline computed for this minute
        self.cached = Decimal(0)
        self.instrument = instrument
        self.changed = changed  # the detector's instruments whose baseline changed since its last end check

    def invalidate(self) -> None:
        """A whole minute already counted changed (a late event, a seed): B is to be computed
        afresh, and the detector re-checks this instrument's cascades."""
        self.cached_minute = -1
        self.changed.add(self.instrument)

    def _advance(self, minute: int) -> None:
        head = self.head
        if minute <= head:
            return
        if head < 0 or minute - head >= _SPAN:
            self.cents = array("q", bytes(8 * _SPAN))
            self.total = 0
        else:  # clear the slots of minutes head+1 .. minute: one or two slices of the ring
            cents, lo, hi = self.cents, (head + 1) % _SPAN, minute % _SPAN + 1
            for a, b in ((lo, hi),) if lo < hi else ((lo, _SPAN), (0, hi)):
                self.total -= sum(cents[a:b])
                cents[a:b] = _ZEROS[: b - a]
        self.head = minute

    def add(self, minute: int, cents: int) -> None:
        if minute > self.head:
            self._advance(minute)
        elif minute <= self.head - _SPAN:
            return  # older than the day the ring holds
        elif minute < self.head:
            self.invalidate()  # a late event (or a seed) changed a whole minute already counted
        self.cents[minute % _SPAN] += cents
        self.total += cents

    def completed(self, minute: int) -> int:
        """Cents in the 1,440 whole minutes before `minute` (a late minute reads the newest day)."""
        self._advance(minute)
        return self.total - self.cents[self.head % _SPAN]


@dataclass(slots=True)
class _Pending:
    """Same-side events of the last window that belong to no cascade, in exchange-time order, with
    their running sums."""

    events: deque[Liquidation] = field(default_factory=deque)
    keys: set[int] = field(default_factory=set)
    weighted: int = 0
    usd: Decimal = Decimal(0)
    latest_ms: int = 0


@dataclass(slots=True)
class _Active:
    cascade: Cascade
    instrument: str  # canonical name
    venue_symbol: str  # the first member's own symbol, for the console line
    threshold: Decimal  # T when it started: the risk score's size reference
    members: dict[int, int] = field(default_factory=dict)  # event key -> exchange time (ms)
    weighted: int = 0
    minute_usd: dict[int, Decimal] = field(default_factory=dict)
    first_time_ms: int = 0
    last_time_ms: int = 0
    last_received_ms: int = 0
    opposite_usd: Decimal = Decimal(0)
    announced_cross: bool = False
    # The members of the last window, in join order: USD, exchange time and USD as a float, side by
    # side. At a minute turn every active cascade is walked at once, and thousands of deques of
    # Decimals miss the CPU caches (~40 us a cascade on a slow machine): the flat arrays walk in C
    # (`_stop`), the Decimals only near the line.
    recent: deque[Decimal] = field(default_factory=deque)
    recent_t: array[int] = field(default_factory=lambda: array("q"))
    recent_f: array[float] = field(default_factory=lambda: array("d"))
    recent_usd: Decimal = Decimal(0)
    # Found going on at the last check; nothing can end it before the wall clock passes `wall_due_ms`,
    # the data clock reaches `clock_due_ms` or its baseline changes (`_schedule`).
    wall_due_ms: int = -1
    clock_due_ms: int = -1
    seq: int = 0  # creation order (the order of `_active`), so ends are reported in that order
    clock_queued: int = _NEVER  # the due of its one live entry in the detector's clock heap
    wall_queued: int = _NEVER  # the same in the wall heap


@dataclass
class CascadeUpdate:
    """What one batch changed: cascades to upsert, earlier members to flag, console lines, and the
    ids of cascades that started or turned cross-venue in it (announced: worth writing at once)."""

    cascades: list[Cascade] = field(default_factory=list)
    flags: list[tuple[int, int, int]] = field(default_factory=list)  # (cascade id, event key, time ms)
    lines: list[str] = field(default_factory=list)
    announced: set[int] = field(default_factory=set)


class CascadeDetector:
    def __init__(
        self,
        window_s: int,
        min_events: int,
        min_usd: Decimal,
        *,
        rule: str = RELATIVE,
        relative_x: Decimal = Decimal(10),
        end_x: Decimal = Decimal(3),
        max_s: int = 900,
        warmup_minutes: int = WARMUP_MINUTES,
        resolver: InstrumentResolver | None = None,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"cascade rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.window_ms = window_s * 1000
        self.min_events = min_events
        self.min_usd = min_usd
        self.rule = rule
        self.relative = rule == RELATIVE
        self.relative_x = relative_x
        self.end_x = end_x
        self.max_ms = max_s * 1000
        self.warmup_minutes = max(1, min(warmup_minutes, DAY_MINUTES))
        self._resolve = resolver or guess_resolver
        self._pending: dict[tuple[str, Side], _Pending] = {}
        self._active: dict[tuple[str, Side], _Active] = {}
        self._baselines: dict[str, _Baseline] = {}
        self._history_minute: int | None = None  # the first minute the baselines know
        self._clock_ms = 0  # latest exchange time seen
        self._batch_keys: set[int] = set()
        self._announce: dict[int, _Active] = {}
        # The end check's schedule (`_end_finished`): (data-clock due, seq, slot) and (wall due, seq,
        # slot) heaps, stale entries left in place; the instruments whose baseline changed since.
        self._clock_checks: list[tuple[int, int, tuple[str, Side]]] = []
        self._wall_checks: list[tuple[int, int, tuple[str, Side]]] = []
        self._rings_changed: set[str] = set()
        self._seq = 0
        self._touched: dict[int, _Active] = {}  # cascade id -> active, joined by this batch

    @classmethod
    def from_settings(cls, settings: Settings, resolver: InstrumentResolver | None = None) -> CascadeDetector:
        return cls(
            settings.cascade_window_s,
            settings.cascade_min_events,
            settings.cascade_min_usd,
            rule=settings.cascade_rule,
            relative_x=settings.cascade_relative_x,
            end_x=settings.cascade_end_x,
            max_s=settings.cascade_max_s,
            resolver=resolver,
        )

    @property
    def active(self) -> list[Cascade]:
        return [a.cascade for a in self._active.values()]

    def seed_baseline(self, instrument: str, minute_usd: Iterable[tuple[int, Decimal | int | float]]) -> None:
        """Add stored history to one canonical instrument's baseline (e.g. the 1-minute rollups of the
        last 24 h at start): (minute start ms, USD of that minute, both sides, every venue). The
        detector's history then starts at the earliest minute seeded, if that is earlier."""
        ring = self._baselines.get(instrument)
        if ring is None:
            ring = self._baselines[instrument] = _Baseline(instrument, self._rings_changed)
        for minute_ms, usd in minute_usd:
            minute = minute_ms // _MINUTE_MS
            ring.add(minute, round(Decimal(usd) * 100))
            if self._history_minute is None or minute < self._history_minute:
                self._history_minute = minute
                for other in self._baselines.values():
                    other.invalidate()
        ring.invalidate()

    def baseline_usd(self, instrument: str, at_ms: int) -> Decimal:
        """B: the instrument's trailing-24-h USD per window at `at_ms` (see the module docstring)."""
        ring = self._baselines.get(instrument)
        if ring is None or self._history_minute is None:
            return Decimal(0)
        minute = at_ms // _MINUTE_MS
        if minute != ring.cached_minute:
            cents = ring.completed(minute)
            newest = max(minute, ring.head)
            covered = min(max(newest - self._history_minute, self.warmup_minutes), DAY_MINUTES)
            ring.cached = Decimal(cents * self.window_ms) / (covered * _MINUTE_MS * 100) if cents > 0 else Decimal(0)
            ring.cached_minute = minute
        return ring.cached

    def process(self, events: list[Liquidation], now_ms: int) -> CascadeUpdate:
        """Feed one batch (any order within it); members get `cascade_id` set in place."""
        update = CascadeUpdate()
        changed: dict[int, Cascade] = {}
        self._batch_keys = {e.key for e in events}
        self._announce = {}
        self._touched = {}
        self._end_finished(changed, now_ms)
        for ev in sorted(events, key=_TIME):
            if ev.time_ms > self._clock_ms:
                self._clock_ms = ev.time_ms
            self._feed(ev, update, changed)
        self._end_finished(changed, now_ms)
        for active in self._touched.values():  # every active cascade this batch changed was joined
            if active.cascade.id in changed and self._active.get((active.instrument, active.cascade.side)) is active:
                self._score(active)
        # one console line per cascade and batch, with its state at the end of the batch
        update.lines.extend(_detected_line(a) for a in self._announce.values())
        update.announced.update(self._announce)
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

    def adopt(self, stored: Cascade, members: list[Liquidation], now_ms: int) -> CascadeUpdate:
        """A collector that just became the leader carries on the active cascade its predecessor
        stored for the same instrument and side, under the stored id, instead of ending it and
        storing its own under another name (one burst, two records). Its own cascade of that slot
        (named after the first member it saw, which may differ) takes the stored id; stored
        `members` it had not counted join; with none of its own, a stored one that is still within a
        window of the data's clock is rebuilt from `members` (an older one is left to the leader's
        stale close). Every member row is flagged with the id, and the cascade is to be upserted."""
        update = CascadeUpdate()
        slot = (stored.symbol, stored.side)
        active = self._active.get(slot)
        if active is not None and active.cascade.id == stored.id:
            return update
        ordered = sorted(members, key=lambda e: (e.time_ms, e.key))
        if active is None:
            if not ordered or stored.end_ms < self._clock_ms - self.window_ms:
                return update
            first = ordered[0]
            threshold = self.min_usd
            if self.relative:
                threshold = max(threshold, self.relative_x * self.baseline_usd(slot[0], first.time_ms))
            cascade = Cascade(
                stored.id, stored.symbol, stored.side, first.time_ms, first.time_ms, 0, Decimal(0), Decimal(0)
            )
            cascade.source = stored.source
            active = self._active[slot] = self._new_active(cascade, slot, first.symbol, threshold)
            active.first_time_ms = active.last_time_ms = first.time_ms
        log.info(
            "cascade %d of %s %s carried on as %d (stored by the previous leader)", active.cascade.id, *slot, stored.id
        )
        active.cascade.id = stored.id
        active.last_received_ms = max(active.last_received_ms, now_ms)  # not "quiet by clock" at once
        self._batch_keys = set()
        for ev in ordered:
            if ev.key not in active.members:
                self._join(active, ev, self._resolve(ev), update)
        pending = self._pending.get(slot)
        if pending is not None and pending.keys & active.members.keys():
            kept = [e for e in pending.events if e.key not in active.members]
            pending.events = deque(kept)
            pending.keys = {e.key for e in kept}
            pending.weighted = sum(event_weight(e) for e in kept)
            pending.usd = sum((e.value_usd for e in kept), Decimal(0))
        update.flags = [(stored.id, key, time_ms) for key, time_ms in active.members.items()]
        self._queue(active)  # its joins want a check at the next batch
        self._score(active)
        update.cascades.append(active.cascade)
        return update

    # --- per event --------------------------------------------------------------------------
    def _feed(self, ev: Liquidation, update: CascadeUpdate, changed: dict[int, Cascade]) -> None:
        instrument = self._resolve(ev)
        name = instrument.canonical
        slot = (name, ev.side)
        pending = self._pending.get(slot)
        if pending is None:
            pending = self._pending[slot] = _Pending()
        if ev.key in pending.keys:
            return  # re-delivered event
        active = self._active.get(slot)
        if active is not None and ev.key in active.members:
            return
        if self.relative:
            self._count(name, ev)
        other = self._active.get((name, OPPOSITE[ev.side]))
        if other is not None and ev.time_ms >= other.first_time_ms:
            other.opposite_usd += ev.value_usd
        if active is not None:
            at_ms = ev.time_ms if ev.time_ms > active.last_time_ms else active.last_time_ms
            # Before its scheduled check (`_schedule`) nothing but a new baseline can end it: most
            # members of a busy cascade skip the check.
            if (at_ms >= active.clock_due_ms or name in self._rings_changed) and self._finished(active, at_ms):
                self._end(slot, active, changed)  # this event starts afresh
                active = None
        if active is not None:
            if ev.time_ms < active.first_time_ms - self.window_ms or (
                self.relative and active.last_time_ms - ev.time_ms > self.max_ms
            ):
                return  # from before this cascade's window, arriving late (another venue's socket lagged): not a member
            self._join(active, ev, instrument, update)
            changed[active.cascade.id] = active.cascade
            return
        self._add_pending(slot, pending, ev, instrument, update, changed)

    def _count(self, name: str, ev: Liquidation) -> None:
        """The baseline learns every new event, both sides (cents, so sums stay exact)."""
        minute = ev.time_ms // _MINUTE_MS
        ring = self._baselines.get(name)
        if ring is None:
            ring = self._baselines[name] = _Baseline(name, self._rings_changed)
        ring.add(minute, round(ev.value_usd * 100))
        if self._history_minute is None:
            self._history_minute = minute

    def _add_pending(
        self,
        slot: tuple[str, Side],
        pending: _Pending,
        ev: Liquidation,
        instrument: Instrument,
        update: CascadeUpdate,
        changed: dict[int, Cascade],
    ) -> None:
        latest = max(pending.latest_ms, ev.time_ms)
        if ev.time_ms < latest - self.window_ms:
            return  # older than the window: it can no longer start anything
        pending.latest_ms = latest
        events, keys = pending.events, pending.keys
        if events and ev.time_ms < events[-1].time_ms:
            # Out of order (another venue's socket behind, a batch of its backlog): the window stays
            # sorted, for the trim below takes the oldest from the front. Unsorted, older events
            # stayed behind a newer front one and inflated the window's sums: background flow
            # became "cascades" of hundreds of events.
            events.insert(bisect.bisect_right(events, ev.time_ms, key=_TIME), ev)
        else:
            events.append(ev)
        keys.add(ev.key)
        weighted, usd = pending.weighted + event_weight(ev), pending.usd + ev.value_usd
        while events and (events[0].time_ms < latest - self.window_ms or len(events) > _RING_MAX):
            old = events.popleft()
            keys.discard(old.key)
            weighted, usd = weighted - event_weight(old), usd - old.value_usd
        pending.weighted, pending.usd = weighted, usd
        if weighted < self.min_events or usd < self.min_usd:
            return
        threshold = self.min_usd
        if self.relative:
            threshold = max(threshold, self.relative_x * self.baseline_usd(slot[0], latest))
            if usd < threshold:
                return
        members = sorted(events, key=lambda e: (e.time_ms, e.key))
        events.clear()
        keys.clear()
        pending.weighted, pending.usd = 0, Decimal(0)
        first = members[0]
        cascade = Cascade(
            id=cascade_id(first.symbol, ev.side, first.key),
            symbol=slot[0],
            side=ev.side,
            start_ms=first.time_ms,
            end_ms=first.time_ms,
            count=0,
            quantity=Decimal(0),
            value_usd=Decimal(0),
            source=first.source,
        )
        active = self._active[slot] = self._new_active(cascade, slot, first.symbol, threshold)
        active.first_time_ms = active.last_time_ms = first.time_ms
        active.last_received_ms = first.received_ms
        for member in members:
            self._join(active, member, instrument if member is ev else self._resolve(member), update)
        changed[cascade.id] = cascade
        self._announce[cascade.id] = active

    def _join(self, active: _Active, ev: Liquidation, instrument: Instrument, update: CascadeUpdate) -> None:
        # Once per member, most events of a market-wide burst: fields read once, the price converted
        # only for a new first or last member, no builtin calls where a comparison does.
        c = active.cascade
        cid, key, t, usd, exchange = c.id, ev.key, ev.time_ms, ev.value_usd, ev.exchange
        self._touched[cid] = active
        if self.relative and t + self.max_ms + 1 < active.clock_due_ms:
            # A late member pulls the start back, and the cap with it. Anything else a member
            # changes only puts the end off: the check scheduled before still comes first.
            active.clock_due_ms = t + self.max_ms + 1
            self._queue(active)
        active.members[key] = t
        ev.cascade_id = cid
        if key not in self._batch_keys:  # handed to the writers with an earlier batch
            update.flags.append((cid, key, t))
        c.count += 1
        c.quantity += instrument.canonical_quantity(ev.quantity)
        c.value_usd += usd
        counts, by_venue = c.counts, c.usd
        counts[exchange] = counts.get(exchange, 0) + 1
        by_venue[exchange] = by_venue.get(exchange, _ZERO) + usd
        active.weighted += SAMPLED_WEIGHT if ev.sampled else 1
        if self.relative:  # the fixed rule never trims it
            active.recent.append(usd)
            active.recent_usd += usd
            active.recent_t.append(t)
            active.recent_f.append(float(usd))
        minute = t - t % _MINUTE_MS
        per_minute = active.minute_usd
        in_minute = per_minute[minute] = per_minute.get(minute, _ZERO) + usd
        peak_minute = c.peak_minute_ms
        if minute != peak_minute:  # the peak's own minute only grows: it stays the peak
            peak = per_minute.get(peak_minute)
            if peak is None or in_minute > peak or (in_minute == peak and minute < peak_minute):
                c.peak_minute_ms = minute
        first = t < active.first_time_ms or c.price_start is None
        last = t >= active.last_time_ms
        if first or last:
            price = instrument.base_price(ev.price)
            if first:
                if t < active.first_time_ms:
                    active.first_time_ms = t
                c.price_start = price
            if last:
                active.last_time_ms = t
                c.price_end = price
        if ev.received_ms > active.last_received_ms:
            active.last_received_ms = ev.received_ms
        c.start_ms, c.end_ms = active.first_time_ms, active.last_time_ms
        if not active.announced_cross and len(counts) >= 2:  # c.cross_exchange
            active.announced_cross = True
            self._announce[cid] = active

    # --- ending -----------------------------------------------------------------------------
    def _finished(self, active: _Active, at_ms: int) -> bool:
        """Quiet for a window, or (relative) past the cap or back to the instrument's normal rate."""
        if at_ms - active.last_time_ms > self.window_ms:
            return True
        if not self.relative:
            return False
        if at_ms - active.first_time_ms > self.max_ms:
            return True
        times, edge, gone = active.recent_t, at_ms - self.window_ms, 0
        while gone < len(times) and times[gone] <= edge:
            active.recent_usd -= active.recent.popleft()
            gone += 1
        if gone:
            del times[:gone]
            del active.recent_f[:gone]
        return active.recent_usd < self.end_x * self.baseline_usd(active.instrument, at_ms)

    def _score(self, active: _Active) -> None:
        c = active.cascade
        c.risk_score = risk_score(
            c.value_usd, active.threshold, active.weighted, c.end_ms - c.start_ms, active.opposite_usd, len(c.counts)
        )

    def _end_finished(self, changed: dict[int, Cascade], now_ms: int) -> None:
        """End every cascade that is finished now. Runs twice a batch while a whole-market burst
        holds a thousand active cascades, so it looks only at those whose scheduled check is due
        (`_schedule`), or whose baseline changed: the same ends as checking every one, in the same
        order."""
        clock = self._clock_ms
        rebased = {(name, side) for name in self._rings_changed for side in (LONG, SHORT)}
        self._rings_changed.clear()
        candidates = set(rebased)
        heap = self._clock_checks
        while heap and heap[0][0] <= clock:
            due, seq, slot = heapq.heappop(heap)
            active = self._active.get(slot)
            if active is not None and active.seq == seq and active.clock_queued == due:
                active.clock_queued = _NEVER
                candidates.add(slot)
        heap = self._wall_checks
        while heap and heap[0][0] < now_ms:
            due, seq, slot = heapq.heappop(heap)
            active = self._active.get(slot)
            if active is not None and active.seq == seq and active.wall_queued == due:
                active.wall_queued = _NEVER
                candidates.add(slot)
        ended = []
        for slot in candidates:
            active = self._active.get(slot)
            if active is None:
                continue  # ended in this batch
            if slot not in rebased and now_ms <= active.wall_due_ms and clock < active.clock_due_ms:
                self._queue(active)  # not due yet: an earlier entry fired, or the sweep found it
                continue
            at_ms = max(clock, active.last_time_ms)
            if now_ms - active.last_received_ms > self.window_ms or self._finished(active, at_ms):
                ended.append(active)
            else:
                self._schedule(active, at_ms)
        for active in sorted(ended, key=lambda a: a.seq):
            self._end((active.instrument, active.cascade.side), active, changed)

    def _queue(self, active: _Active) -> None:
        """Keep one heap entry per active cascade and clock, at or before its due: an earlier
        entry that fires finds it not due and queues the real one then."""
        slot = (active.instrument, active.cascade.side)
        if active.clock_due_ms < active.clock_queued:
            active.clock_queued = active.clock_due_ms
            heapq.heappush(self._clock_checks, (active.clock_due_ms, active.seq, slot))
        if active.wall_due_ms < active.wall_queued:
            active.wall_queued = active.wall_due_ms
            heapq.heappush(self._wall_checks, (active.wall_due_ms, active.seq, slot))

    def _new_active(self, cascade: Cascade, slot: tuple[str, Side], venue_symbol: str, threshold: Decimal) -> _Active:
        self._seq += 1
        active = _Active(cascade, slot[0], venue_symbol, threshold, seq=self._seq)
        self._queue(active)  # due at once (-1): checked at the next call
        return active

    def _leaves(self, active: _Active, normal: Decimal) -> int:
        """When enough of the first `_WALK_MAX` recent members will have left the window for the
        rest to be below `normal` (the latest of their times + window); if even all of those are
        not enough, when they have left (the walk goes on from there), or never when they are all
        of `recent` (only a new baseline can end it then)."""
        return self._leaves_after(active, self._stop(active, normal))

    def _leaves_exact(self, active: _Active, normal: Decimal) -> int:
        """`_leaves` by walking the members' Decimals one by one."""
        return self._leaves_after(active, self._stop_exact(active, normal))

    def _leaves_after(self, active: _Active, stop: int | None) -> int:
        if stop is None:
            if len(active.recent_t) <= _WALK_MAX:
                return _NEVER
            stop = _WALK_MAX - 1
        return max(itertools.islice(active.recent_t, stop + 1)) + self.window_ms

    def _stop(self, active: _Active, normal: Decimal) -> int | None:
        """The index of the first member whose leaving brings the rest below `normal`, among the
        first `_WALK_MAX`; None if none does. From the float copies in C (prefix sums, a bisection);
        the Decimals are walked only when a prefix sum lands within `_WALK_MARGIN` of the line,
        where float rounding could tell it wrong."""
        n = min(len(active.recent_f), _WALK_MAX)
        if n == 0:
            return None
        prefix = list(itertools.accumulate(itertools.islice(active.recent_f, n)))
        total = float(active.recent_usd)  # the exact sum, rounded once (a float sum would cost O(members))
        line = total - float(normal)  # the walk stops at the first prefix sum above this
        k = bisect.bisect_right(prefix, line)
        margin = _WALK_MARGIN * total
        if (k < n and prefix[k] - line <= margin) or (k > 0 and line - prefix[k - 1] <= margin):
            return self._stop_exact(active, normal)
        return k if k < n else None

    @staticmethod
    def _stop_exact(active: _Active, normal: Decimal) -> int | None:
        usd = active.recent_usd
        for k, member_usd in enumerate(itertools.islice(active.recent, _WALK_MAX)):
            usd -= member_usd
            if usd < normal:
                return k
        return None

    def _schedule(self, active: _Active, at_ms: int) -> None:
        """After `_finished(active, at_ms)` said no: the earliest wall time and data-clock time at
        which it could say yes, were no member to join (a member only puts the end off, or pulls
        the cap forward: `_join`). Quiet by wall clock after `last_received_ms` + window; quiet by
        data after `last_time_ms` + window; (relative) the cap after `first_time_ms` + `max_s`; back
        to normal when enough recent members have left the window for `recent_usd` to fall below
        `end_x` x B (members leave from the front, once the window's edge passes them and every one
        before them), or when B moves (a new minute; a late minute or a seed re-checks it: `_Baseline.invalidate`)."""
        window = self.window_ms
        active.wall_due_ms = active.last_received_ms + window
        due = active.last_time_ms + window + 1
        if self.relative:
            due = min(due, active.first_time_ms + self.max_ms + 1, (at_ms // _MINUTE_MS + 1) * _MINUTE_MS)
            normal = self.end_x * self.baseline_usd(active.instrument, at_ms)
            due = min(due, self._leaves(active, normal))
            if active.instrument not in self._baselines:
                due = at_ms  # no baseline yet: one may appear at any event, check every time
        active.clock_due_ms = due
        self._queue(active)

    def _end(self, slot: tuple[str, Side], active: _Active, changed: dict[int, Cascade]) -> None:
        del self._active[slot]
        self._score(active)
        active.cascade.active = False
        changed[active.cascade.id] = active.cascade


def _usd(value: Decimal) -> str:
    return f"${value:,.0f}"


def _detected_line(active: _Active) -> str:
    c = active.cascade
    if c.cross_exchange:
        return f"CROSS-EXCHANGE CASCADE DETECTED: {c.count} liquidations | {_usd(c.value_usd)}"
    exchange = next(iter(c.counts), "").upper()
    return f"CASCADE DETECTED: {exchange} {active.venue_symbol} {c.side} {c.count} liquidations | {_usd(c.value_usd)}"
