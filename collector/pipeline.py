"""The pipeline: bounded queue -> router (batching, cascades, Redis) -> database task (TimescaleDB or spool).

The router takes whatever is queued (up to `batch_max` events; it flushes as soon as anything is
there, so batches grow by themselves under load), runs cascade detection, writes the batch to
Redis in one pipeline and hands it to the database task through a bounded inbox. The database
task merges what waits in its inbox into one transaction. Keeping Redis out of the database's
round trip keeps frame-to-Redis latency low.

Nothing lost, nothing doubled:
- TimescaleDB down or not answering within its deadlines: batches are appended to the spool
  (fsynced) and replayed in order before any newer batch once it answers; while the spool holds
  anything, new batches go behind it. A write that hangs while the router waits for inbox room
  is not waited for: its batch is spooled at once, so the live view keeps moving.
- A batch TimescaleDB refuses for its data: the writer isolates the rows at fault, everything
  else is committed, those rows go to the quarantine file (counted, shown); same on replay.
- Spool full or its disk failing (ENOSPC, EIO...): the batch stays in memory and is retried every
  second; the inbox fills, the router waits, the queue fills, adapters wait on `put`:
  backpressure, logged, counted and published, never a drop and never a crash.
- Redis down or flushed: TimescaleDB keeps everything; when Redis answers again the database task
  rebuilds the window from TimescaleDB plus its own inbox (events not committed yet), at a point
  where the spool is empty, so no event is missing from the rebuilt view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from collector.cascades import CascadeDetector, CascadeUpdate
from collector.health import now_ms
from collector.storage.quarantine import Quarantine, Refused
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch, Spool, SpoolError, SpoolFull, disk_error_text
from collector.storage.timescale import DatabaseUnavailable, TimescaleWriter, WriteResult, one_line
from common.config import Settings
from common.events import Candle, Cascade, Event, Liquidation, StreamStatus
from common.instruments import guess_instrument
from common.live_view import TRIM_MARGIN_MS, WINDOW_MS

DAY_MS = 86_400_000  # the cascade baselines' history
STALE_CLOSE_S = 10.0  # how often the leader closes what a dead collector left open
CANDLE_FLUSH_S = 5.0  # how often the open minute of each candle is written (closed minutes: at once)
# How often an active cascade's running totals are written. Its start, its turning cross-venue and
# its end go at once; in between, a busy cascade changes with nearly every batch, and a whole-market
# burst holds a thousand of them (the live page reads them every 10 s).
CASCADE_FLUSH_S = 1.0
log = logging.getLogger("collector.pipeline")

T = TypeVar("T")

_RETRY_S = 1.0
# A batch write this slow, while the router waits for inbox room, is not waited for (spooled).
_SLOW_WRITE_S = 5.0
_SLOW_STOPPING_S = 1.0  # the same while shutting down: the spool is quicker than a stuck server
_RECHECK_S = 0.25
# Quarantined liquidations are in Redis (the router wrote them first): the live view is rebuilt
# from TimescaleDB, at most this often.
_QUARANTINE_REBUILD_S = 60.0


def institutional_line(ev: Liquidation) -> str:
    symbol = one_line(ev.symbol)
    return f"INSTITUTIONAL: {ev.exchange.upper()} {symbol} {ev.side} ${ev.value_usd:,.2f} @ ${ev.price:,.2f}"


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        queue: asyncio.Queue[Event],
        db: TimescaleWriter,
        live: RedisLive,
        spool: Spool,
        *,
        on_redis_batch: Callable[[Batch], None] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.db = db
        self.live = live
        self.spool = spool
        if not spool.empty:
            live.needs_rebuild = True  # spooled events may never have reached Redis
        self.detector = CascadeDetector.from_settings(settings)
        self._inbox: deque[Batch] = deque()
        self._inbox_events = 0
        self._inbox_max = max(settings.batch_max * 4, 1000)
        self._inbox_changed = asyncio.Event()
        self._router_done = False
        self._own_connections: set[str] = set()
        self._stale_closed = False
        self._on_redis_batch = on_redis_batch
        self._current: Batch | None = None  # taken from the inbox, not yet committed or spooled
        # Set while the router waits for inbox room, and for good once it is done (shutting down):
        # then a slow write is not waited for (its batch is spooled instead).
        self._hurry = asyncio.Event()
        self._detached: asyncio.Task[WriteResult] | None = None  # a slow write whose batch was spooled
        self._started_ms = now_ms()
        self.quarantine = Quarantine(spool.path.parent)
        self._quarantined_live = False
        self._next_quarantine_rebuild = 0.0
        # For the metrics (collector/metrics.py), read when scraped: nothing here waits on them.
        self.liquidations: dict[tuple[str, str], int] = {}  # (exchange, side) -> routed to storage
        self.observe_db: Callable[[float], None] | None = None  # seconds per TimescaleDB batch
        self.observe_redis: Callable[[float], None] | None = None  # seconds per Redis batch
        # Several collectors may write one record (collector/leader.py): only the leader writes
        # cascades; every collector detects them, so a successor carries on. One alone always leads.
        self.is_leader: Callable[[], bool] = lambda: True
        # What a takeover carries on (read by `prepare_takeover` before leadership turns true),
        # applied by the router at its next step as the leader.
        self._takeover: list[tuple[Cascade, list[Liquidation]]] | None = None
        self._next_stale_close = 0.0
        # Open candles, the latest update of each (exchange, symbol, minute): written every
        # CANDLE_FLUSH_S instead of every push (Binance pushes each symbol's open minute 4 times a
        # second: 2,400 row updates a second for the whole market); a closed minute goes at once.
        self._open_candles: dict[tuple[str, str, int], Candle] = {}
        self._candles_due = time.monotonic() + CANDLE_FLUSH_S
        # Active cascades changed since their last write, in the order they began to wait, each due
        # CASCADE_FLUSH_S after that (its own clock: a thousand cascades written in one batch once
        # a second held the router up for 100 ms), and the active ones whose row exists (only those
        # may wait).
        self._cascades_later: OrderedDict[int, tuple[Cascade, float]] = OrderedDict()
        self._cascades_written: set[int] = set()
        self._blocked_since: float | None = None  # the spool cannot take batches since then
        self._next_block_log = 0.0
        self.routed_events = 0
        self._unwritten_since_ms: int | None = None  # read time of the oldest event of the step in progress
        self._waiting: asyncio.Timeout | None = None  # the router's wait for events, while it waits
        self.committed_events = 0
        self.spooled_batches = 0
        self.backpressure_s = 0.0
        self.rejected_batches = 0
        self.invalid_events = 0

    # --- router --------------------------------------------------------------------------
    async def seed_cascade_baselines(self, sources: list[str]) -> int:
        """Teach the cascade detector each instrument's last 24 hours from the 1-minute rollups, so
        that a restart does not leave it judging cascades against the absolute floor alone for a
        day. Minutes are summed per canonical instrument over every venue (as the detector counts
        them) and only complete minutes before this one are read: the live flow adds the rest.
        Returns the instruments seeded; a database that does not answer costs only the warm start."""
        now = now_ms()
        minute = now - now % 60_000
        try:
            rows = await self.db.minute_usd(minute - DAY_MS, minute, sources)
        except DatabaseUnavailable as exc:
            log.warning("cascade baselines start empty (the relative rule learns from the flow): %s", exc)
            return 0
        per: dict[str, dict[int, Decimal]] = {}
        for exchange, symbol, minute_ms, usd in rows:
            name = guess_instrument(exchange, symbol).canonical
            minutes = per.setdefault(name, {})
            minutes[minute_ms] = minutes.get(minute_ms, Decimal(0)) + usd
        for name, minutes in per.items():
            self.detector.seed_baseline(name, sorted(minutes.items()))
        log.info("cascade baselines: %d instruments from %d stored minutes", len(per), len(rows))
        return len(per)

    async def run_router(self, stop: asyncio.Event) -> None:
        """Route until `stop` is set and the queue is empty (the adapters have stopped by then)."""
        # One task for the whole run wakes a waiting router when `stop` is set, so that each wait
        # costs one timer, not two tasks (the router waits for most of the candle feed's events).
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: self._wake_router())
        try:
            while True:
                batch_events = await self._take(stop)
                if batch_events is None:
                    break
                self._unwritten_since_ms = self._read_ms(batch_events[0])
                await self._route(batch_events)
                self._unwritten_since_ms = None
            ended = self.detector.close_all() if self.is_leader() else []
            await self._dispatch(Batch(candles=self._take_open_candles(), cascades=ended))
        finally:
            stopper.cancel()
            self._router_done = True
            self._hurry.set()
            self._inbox_changed.set()

    async def _take(self, stop: asyncio.Event) -> list[Event] | None:
        """The next step's events (at most batch_max), waiting for the first; None once `stop` is
        set and the queue is empty. A wait that times out runs the tick (due cascades, candles)."""
        while self.queue.empty():
            if stop.is_set():
                return None
            wait = 1.0
            if self._cascades_later:  # a quiet feed still writes a waiting cascade when it is due
                _, due = next(iter(self._cascades_later.values()))
                wait = min(wait, max(0.0, due - time.monotonic()))
            try:
                async with asyncio.timeout(wait) as self._waiting:
                    events = [await self.queue.get()]  # a cancelled get() leaves its item queued
                break
            except TimeoutError:
                if not stop.is_set():
                    await self._tick()
            finally:
                self._waiting = None
        else:
            events = []
        while len(events) < self.settings.batch_max:
            try:
                events.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return events

    def _wake_router(self) -> None:
        """End the router's wait now (`stop` was set): its timeout expires at once."""
        if self._waiting is not None and not self._waiting.expired():
            self._waiting.reschedule(asyncio.get_running_loop().time())

    @staticmethod
    def _read_ms(oldest: Event) -> int:
        received = oldest.at_ms if isinstance(oldest, StreamStatus) else getattr(oldest, "received_ms", None)
        return now_ms() if received is None else received

    def behind_s(self) -> float:
        """How long the oldest event not yet in the live view has waited since it was read (0 while
        the router waits for events): the queue, the router's own work and its wait for the
        database writer's room. A lower bound on how far the live view trails the venues: a backlog
        still in the sockets (the adapters stop reading while the queue is full) is not counted."""
        since = self._unwritten_since_ms
        return 0.0 if since is None else round(max(0, now_ms() - since) / 1000, 1)

    async def prepare_takeover(self) -> None:
        """Before this collector leads (collector/leader.py): read the cascades the previous leader
        left active, to carry them on."""
        self._takeover = await self.db.active_cascades()

    def _carry_on(self, batch: Batch) -> None:
        """As the new leader: take over the predecessor's active cascades (CascadeDetector.adopt)."""
        taken, self._takeover = self._takeover, None
        for stored, members in taken or []:
            update = self.detector.adopt(stored, members, now_ms())
            batch.cascades.extend(update.cascades)
            batch.flags.extend(update.flags)
            self._cascades_written.update(c.id for c in update.cascades if c.active)

    def _cascades_now(self, update: CascadeUpdate) -> list[Cascade]:
        """Of the cascades a batch changed (the leader's), those to write now: new ones, announced
        ones and ended ones, plus the waiting ones whose CASCADE_FLUSH_S has passed. The rest wait;
        the objects are the detector's own, so a later write carries their latest totals."""
        now: list[Cascade] = []
        later, written = self._cascades_later, self._cascades_written
        clock = time.monotonic()
        for c in update.cascades:
            if c.active and c.id in written and c.id not in update.announced:
                waiting = later.get(c.id)  # already waiting: keeps its place and its time
                later[c.id] = (c, clock + CASCADE_FLUSH_S if waiting is None else waiting[1])
                continue
            later.pop(c.id, None)
            now.append(c)
            if c.active:
                written.add(c.id)
            else:
                written.discard(c.id)
        while later:
            cid, (c, due) = next(iter(later.items()))
            if due > clock:
                break  # the rest began to wait later still
            del later[cid]
            now.append(c)
        return now

    def _not_leading(self) -> None:
        """Another collector writes the cascades: forget what this one would have written."""
        self._cascades_later.clear()
        self._cascades_written.clear()

    async def _tick(self) -> None:
        """Quiet second: end cascades that went quiet by wall clock; write open candles when due."""
        batch = Batch(candles=self._due_candles())
        leader = self.is_leader()  # read once: nothing below awaits
        if leader:
            self._carry_on(batch)
        update = self.detector.tick(now_ms())
        if leader:
            batch.cascades.extend(self._cascades_now(update))
        else:
            self._not_leading()
        await self._dispatch(batch)

    def _due_candles(self) -> list[Candle]:
        if time.monotonic() < self._candles_due:
            return []
        return self._take_open_candles()

    def _take_open_candles(self) -> list[Candle]:
        self._candles_due = time.monotonic() + CANDLE_FLUSH_S
        pending = list(self._open_candles.values())
        self._open_candles.clear()
        return pending

    async def _route(self, events: list[Event]) -> None:
        batch = Batch()
        for ev in events:
            if isinstance(ev, Liquidation):
                if not (ev.quantity > 0 and ev.price > 0 and ev.value_usd > 0):
                    # the schema refuses it and one bad row would cost its whole batch
                    self.invalid_events += 1
                    log.warning("dropped a liquidation with a non-positive amount: %r", ev)
                    continue
                batch.liquidations.append(ev)
                counted = (ev.exchange, ev.side.value)
                self.liquidations[counted] = self.liquidations.get(counted, 0) + 1
                if ev.value_usd >= self.settings.institutional_usd:
                    log.info(institutional_line(ev))
            elif isinstance(ev, Candle):
                minute = (ev.exchange, ev.symbol, ev.open_ms)
                if ev.closed:
                    self._open_candles.pop(minute, None)
                    batch.candles.append(ev)
                else:
                    self._open_candles[minute] = ev
            elif isinstance(ev, StreamStatus):
                batch.statuses.append(ev)
                self._own_connections.add(ev.connection_id)
                if ev.state != "heartbeat":
                    log.info("%s %s %s %s", ev.exchange, ev.state, ev.connection_id, one_line(ev.reason))
            elif isinstance(ev, Cascade):
                batch.cascades.append(ev)
        leader = self.is_leader()  # read once: nothing below awaits
        if leader:
            self._carry_on(batch)
        update = self.detector.process(batch.liquidations, now_ms())
        if leader:
            for line in update.lines:
                log.info(line)
            batch.cascades.extend(self._cascades_now(update))
            batch.flags.extend(update.flags)
        else:  # the leader names and stores cascades; a second name for one would double it
            for ev in batch.liquidations:
                ev.cascade_id = None
            batch.cascades.clear()
            self._not_leading()
        batch.candles.extend(self._due_candles())
        self.routed_events += len(events)
        await self._dispatch(batch)

    async def _dispatch(self, batch: Batch) -> None:
        if not batch:
            # Most steps between bursts only move open candles (written every CANDLE_FLUSH_S), and
            # most quiet ticks change nothing: an empty batch would still cost the writer a
            # transaction and its round trips.
            return
        # Wait for room first: between the Redis write and the inbox append there is no await, so
        # a Redis rebuild always finds every batch in Redis either committed or in the inbox.
        waited = time.monotonic()
        while self._inbox_events >= self._inbox_max:
            self._hurry.set()
            self._inbox_changed.clear()
            await self._inbox_changed.wait()
        self._hurry.clear()
        self.backpressure_s += time.monotonic() - waited
        started = time.perf_counter()
        await self.live.write(batch)
        if self.observe_redis is not None:
            self.observe_redis(time.perf_counter() - started)
        if self._on_redis_batch is not None:
            self._on_redis_batch(batch)
        self._inbox.append(batch)
        self._inbox_events += len(batch)
        self._inbox_changed.set()

    # --- database task -------------------------------------------------------------------
    async def run_database(self) -> None:
        """Write inbox batches (or spool them) until the router is done and everything is handed on."""
        while True:
            if not self._inbox:
                if self._router_done:
                    break
                self._inbox_changed.clear()
                try:
                    await asyncio.wait_for(self._inbox_changed.wait(), timeout=_RETRY_S)
                except TimeoutError:
                    await self._housekeeping()
                    continue
            self._current = self._merge_inbox()
            await self._store(self._current)
            self._current = None
            await self._housekeeping()
        await self._housekeeping(final=True)
        if self._detached is not None and not self._detached.done():
            self._detached.cancel()  # its batch is in the spool: the next start writes it

    def _merge_inbox(self) -> Batch:
        merged = Batch()
        while self._inbox and len(merged) < self.settings.batch_max * 2:
            merged.extend(self._inbox.popleft())
        return merged

    def _release(self, batch: Batch) -> None:
        self._inbox_events -= len(batch)
        self._inbox_changed.set()

    async def _store(self, batch: Batch) -> None:
        """Commit, or spool; while the spool cannot take it either (full, disk error), keep the
        batch and retry every second: backpressure, never a drop."""
        pending = batch
        while True:
            if self.spool.empty and await self._ready():
                outcome = await self._write_watching(pending)
                if outcome is None:  # spooled while the write went on
                    self._release(batch)
                    return
                if isinstance(outcome, WriteResult):
                    self.committed_events += len(pending) - len(outcome.refused)
                    await self._quarantine(outcome.refused)
                    self._unblock()
                    self._release(batch)
                    return
                pending = outcome  # the part not written yet
            if await self._spool(pending):
                self._release(batch)
                await self._drain_spool()
                return
            await asyncio.sleep(_RETRY_S)
            await self._drain_spool()

    async def _write_watching(self, batch: Batch) -> WriteResult | Batch | None:
        """Write `batch`; the result, or the part still to store when the database failed.

        A write that takes long while the router waits for inbox room (the live view would stall)
        or while shutting down is not waited for: the batch goes to the spool (None is returned)
        and the write goes on, detached; the spool is replayed only after it ended, so nothing is
        written out of order.
        """
        write = asyncio.create_task(self._timed_write(batch))
        try:
            return await self._watch(write, batch)
        except asyncio.CancelledError:
            write.cancel()
            raise

    async def _timed_write(self, batch: Batch) -> WriteResult:
        started = time.perf_counter()
        try:
            return await self.db.write(batch)
        finally:
            if self.observe_db is not None:
                self.observe_db(time.perf_counter() - started)

    def _slow_after(self) -> float:
        """How long a database call may take before it stops holding up the router or a shutdown."""
        return min(_SLOW_STOPPING_S if self._router_done else _SLOW_WRITE_S, self.settings.db_batch_timeout_s / 2)

    async def _patient(self, call: Coroutine[Any, Any, T]) -> T | None:
        """A housekeeping call (migrations, stale coverage, the live-view window): None when it is
        slow while the router waits for room or while stopping; it is tried again later."""
        task = asyncio.ensure_future(call)
        started = time.monotonic()
        while not task.done():
            now = time.monotonic()
            slow_at = started + self._slow_after()  # shorter once stopping
            if now < slow_at:
                await asyncio.wait({task}, timeout=min(slow_at - now, _RECHECK_S))
            elif not self._hurry.is_set():
                waiter = asyncio.ensure_future(self._hurry.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            else:
                task.cancel()  # the writer's deadline machinery drops the connection
                await asyncio.wait({task})
                log.warning("TimescaleDB is slow to answer (%.1f s): housekeeping postponed", now - started)
                return None
        return task.result()

    async def _watch(self, write: asyncio.Task[WriteResult], batch: Batch) -> WriteResult | Batch | None:
        started = time.monotonic()
        detachable = True
        while not write.done():
            now = time.monotonic()
            slow_at = started + self._slow_after()  # shorter once stopping
            if now < slow_at:
                await asyncio.wait({write}, timeout=min(slow_at - now, _RECHECK_S))
            elif not detachable:
                await asyncio.wait({write})  # the spool refuses too: the write's own deadline ends it
            elif not self._hurry.is_set():
                waiter = asyncio.ensure_future(self._hurry.wait())
                await asyncio.wait({write, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            elif await self._spool(batch):
                log.warning(
                    "TimescaleDB has not finished a batch for %.1f s: spooled meanwhile, so the live view goes on",
                    now - started,
                )
                self._detached = write
                write.add_done_callback(_consume)
                return None
            else:
                detachable = False
        try:
            return write.result()
        except DatabaseUnavailable as exc:
            if exc.refused:
                await self._quarantine(exc.refused)
            if exc.remaining is None:
                return batch
            self.committed_events += len(batch) - len(exc.remaining) - len(exc.refused)
            return exc.remaining

    async def _spool(self, batch: Batch) -> bool:
        """Append to the spool; False (and backpressure) when it is full or the disk refuses."""
        try:
            await asyncio.to_thread(self.spool.append, batch)
        except (SpoolFull, SpoolError) as exc:
            self._block(exc)
            return False
        self.spooled_batches += 1
        self._unblock()
        return True

    def _block(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._blocked_since is None or now >= self._next_block_log:
            what = "SPOOL FULL" if isinstance(exc, SpoolFull) else "SPOOL DISK ERROR"
            log.error(
                "%s: %s; the batch stays in memory, backpressure until the spool or TimescaleDB takes it",
                what,
                exc,
            )
            self._next_block_log = now + 60.0
        if self._blocked_since is None:
            self._blocked_since = now

    def _unblock(self) -> None:
        if self._blocked_since is not None:
            log.info("backpressure over after %.1f s: batches flow again", time.monotonic() - self._blocked_since)
            self._blocked_since = None

    async def _ready(self) -> bool:
        if self._detached is not None:
            if not self._detached.done():
                return False
            self._detached = None
        if not await self.db.available():
            return False
        if self.db.migrated:
            return True

        async def migrate() -> bool:
            await self.db.ensure_schema()
            return True

        try:
            return await self._patient(migrate()) is not None
        except DatabaseUnavailable:
            return False

    async def _quarantine(self, refused: list[Refused]) -> None:
        """Set refused rows aside (once each) and count them."""
        if not refused:
            return
        fresh = await asyncio.to_thread(self.quarantine.add, refused)
        if not fresh:
            return
        self.rejected_batches += 1
        log.error(
            "QUARANTINED %d rows TimescaleDB refused as data (%s: %s) in %s; everything else is stored",
            len(fresh),
            fresh[-1].sqlstate or "client",
            one_line(fresh[-1].reason),
            self.quarantine.path,
        )
        if any(r.batch.liquidations for r in fresh):
            self._quarantined_live = True  # Redis shows them: rebuild it from TimescaleDB soon

    async def _drain_spool(self) -> bool:
        """Replay the spool in order; True when it is empty afterwards."""
        if self.spool.empty:
            return True
        if not await self._ready():
            return False
        offset = 0
        replayed = 0
        try:
            while offset < self.spool.bytes:
                chunk, offset, undecodable = await asyncio.to_thread(
                    self.spool.read_chunk, offset, self.settings.batch_max
                )
                if undecodable:
                    log.error("%d spool lines do not decode: set aside in %s", len(undecodable), self.quarantine.path)
                    await asyncio.to_thread(self.quarantine.add_lines, undecodable, "spool line does not decode")
                try:
                    result = await self._timed_write(chunk)
                except DatabaseUnavailable as exc:
                    await self._quarantine(exc.refused)
                    return False
                await self._quarantine(result.refused)
                replayed += len(chunk) - len(result.refused)
                await self._spill_inbox()
            await asyncio.to_thread(self.spool.clear)
        except OSError as exc:
            log.error("spool replay stopped by the disk (%s); retrying", disk_error_text(exc))
            return False
        self.committed_events += replayed
        log.info("spool replayed: %d events written to TimescaleDB", replayed)
        return True

    async def _spill_inbox(self) -> None:
        """During a long replay, batches the router cannot hand over go behind the spool (replayed
        in this same pass), so the router, and with it the live view, never waits for the replay."""
        while self._inbox and self._hurry.is_set():
            batch = self._inbox[0]
            if not await self._spool(batch):
                return
            self._inbox.popleft()
            self._release(batch)

    async def _housekeeping(self, final: bool = False) -> None:
        """Spool replay, stale coverage at start, Redis rebuild: each only when the database answers."""
        if not await self._drain_spool():
            return
        if self._stale_closed and time.monotonic() >= self._next_stale_close:
            self._stale_closed = False  # again: a collector beside this one may have died meanwhile
        if not self._stale_closed and self.is_leader():
            self._next_stale_close = time.monotonic() + STALE_CLOSE_S
            try:
                # ours, and the predecessor's that the router is about to carry on
                own_cascades = [c.id for c in self.detector.active] + [c.id for c, _ in self._takeover or []]
                done = await self._patient(self.db.close_stale(self._own_connections, own_cascades, self._started_ms))
                if done is None:
                    return
                closed, ended = done
                self._stale_closed = True
                if closed or ended:
                    log.info("a previous run left %d streams and %d cascades open: closed them", closed, ended)
                if ended:
                    self.live.needs_rebuild = True  # its Redis copy still shows them active
            except DatabaseUnavailable:
                return
        if self._quarantined_live and time.monotonic() >= self._next_quarantine_rebuild:
            self._quarantined_live = False
            self._next_quarantine_rebuild = time.monotonic() + _QUARANTINE_REBUILD_S
            self.live.needs_rebuild = True
        if self.live.needs_rebuild and self.live.available and not final:
            await self._rebuild_live()

    async def _rebuild_live(self) -> None:
        """Runs between database batches: all routed events are committed, spooled (the spool is
        empty here) or waiting in the inbox, and batches routed meanwhile also feed the rebuild."""
        if not await self.live.begin_rebuild():
            return
        try:
            window = await self._patient(self.db.fetch_window(now_ms() - WINDOW_MS - TRIM_MARGIN_MS))
        except DatabaseUnavailable:
            window = None
        if window is None:
            self.live.abort_rebuild()
            return
        liqs, cascades = window

        def current_cascades() -> list[Cascade]:
            merged = {c.id: c for c in cascades}
            merged.update((c.id, c) for c in self.detector.active)
            return list(merged.values())

        def pending() -> list[Liquidation]:
            return [ev for b in self._inbox for ev in b.liquidations]

        await self.live.rebuild(liqs, current_cascades, pending)

    async def emergency_spool(self) -> int:
        """Shutdown ran out of time: spool what is still in memory (idempotent if it was committed)."""
        if self._detached is not None:
            self._detached.cancel()  # its batch is in the spool already
        batches = ([self._current] if self._current is not None else []) + list(self._inbox)
        self._inbox.clear()
        self._current = None
        lost = 0
        for batch in batches:
            try:
                await asyncio.to_thread(self.spool.append, batch)
            except (SpoolFull, SpoolError):
                lost += len(batch)
        if lost:
            log.error(
                "shutdown while the spool takes nothing (%s): %d events not stored", self.spool.error or "full", lost
            )
        return lost

    def state(self) -> dict[str, Any]:
        return {
            "queue": self.queue.qsize(),
            "queue_max": self.queue.maxsize,
            "behind_s": self.behind_s(),
            "inbox": self._inbox_events,
            "routed_events": self.routed_events,
            "committed_events": self.committed_events,
            "spool": self.spool.state(),
            "backpressure": self._blocked_since is not None,
            "backpressure_s": round(self.backpressure_s, 1),
            "database": self.db.status,
            "database_error": self.db.error,
            "quarantined_rows": self.quarantine.rows,
            "quarantine_file": str(self.quarantine.path),
            "last_quarantine_reason": one_line(self.quarantine.last_reason)[:300],
            "rejected_batches": self.rejected_batches,
            "invalid_events": self.invalid_events,
        }


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a detached write: its batch is in the spool whatever happened
