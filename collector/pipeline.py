"""The pipeline: bounded queue -> router (batching, cascades, Redis) -> database task (TimescaleDB or spool).

The router takes whatever is queued (up to `batch_max` events; it flushes as soon as anything is
there, so batches grow by themselves under load), runs cascade detection, writes the batch to
Redis in one pipeline and hands it to the database task through a bounded inbox. The database
task merges what waits in its inbox into one transaction. Keeping Redis out of the database's
round trip keeps frame-to-Redis latency low.

Nothing lost, nothing doubled:
- TimescaleDB down: batches are appended to the spool (fsynced) and replayed in order before any
  newer batch once it answers; while the spool holds anything, new batches go behind it.
- Spool full: the batch stays in memory and is retried every second; the inbox fills, the router
  waits, the queue fills, adapters wait on `put`: backpressure, logged and counted, never a drop.
- Redis down or flushed: TimescaleDB keeps everything; when Redis answers again the database task
  rebuilds the window from TimescaleDB plus its own inbox (events not committed yet), at a point
  where the spool is empty, so no event is missing from the rebuilt view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from collector.cascades import CascadeDetector
from collector.health import now_ms
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch, Spool, SpoolFull, encode_batch
from collector.storage.timescale import DatabaseUnavailable, TimescaleWriter
from common.config import Settings
from common.events import Candle, Cascade, Event, Liquidation, StreamStatus
from common.live_view import TRIM_MARGIN_MS, WINDOW_MS

log = logging.getLogger("collector.pipeline")

_RETRY_S = 1.0


def institutional_line(ev: Liquidation) -> str:
    return f"INSTITUTIONAL: {ev.exchange.upper()} {ev.symbol} {ev.side} ${ev.value_usd:,.2f} @ ${ev.price:,.2f}"


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
        self.detector = CascadeDetector(
            settings.cascade_window_s, settings.cascade_min_events, settings.cascade_min_usd
        )
        self._inbox: deque[Batch] = deque()
        self._inbox_events = 0
        self._inbox_max = max(settings.batch_max * 4, 1000)
        self._inbox_changed = asyncio.Event()
        self._router_done = False
        self._own_connections: set[str] = set()
        self._stale_closed = False
        self._on_redis_batch = on_redis_batch
        self._current: Batch | None = None  # taken from the inbox, not yet committed or spooled
        self.routed_events = 0
        self.committed_events = 0
        self.spooled_batches = 0
        self.backpressure_s = 0.0
        self.rejected_batches = 0
        self.invalid_events = 0

    # --- router --------------------------------------------------------------------------
    async def run_router(self, stop: asyncio.Event) -> None:
        """Route until `stop` is set and the queue is empty (the adapters have stopped by then)."""
        try:
            while True:
                batch_events = await self._take(stop)
                if batch_events is None:
                    break
                await self._route(batch_events)
            ended = self.detector.close_all()
            if ended:
                await self._dispatch(Batch(cascades=ended))
        finally:
            self._router_done = True
            self._inbox_changed.set()

    async def _take(self, stop: asyncio.Event) -> list[Event] | None:
        while self.queue.empty():
            if stop.is_set():
                return None
            getter = asyncio.ensure_future(self.queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter.done() and not getter.cancelled():
                events = [getter.result()]
                break
            getter.cancel()
            if not done:
                await self._tick()
        else:
            events = []
        while len(events) < self.settings.batch_max:
            try:
                events.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return events

    async def _tick(self) -> None:
        """Quiet second: end cascades that went quiet by wall clock."""
        update = self.detector.tick(now_ms())
        if update.cascades:
            await self._dispatch(Batch(cascades=update.cascades))

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
                if ev.value_usd >= self.settings.institutional_usd:
                    log.info(institutional_line(ev))
            elif isinstance(ev, Candle):
                batch.candles.append(ev)
            elif isinstance(ev, StreamStatus):
                batch.statuses.append(ev)
                self._own_connections.add(ev.connection_id)
                if ev.state != "heartbeat":
                    log.info("%s %s %s %s", ev.exchange, ev.state, ev.connection_id, ev.reason)
            elif isinstance(ev, Cascade):
                batch.cascades.append(ev)
        update = self.detector.process(batch.liquidations, now_ms())
        for line in update.lines:
            log.info(line)
        batch.cascades.extend(update.cascades)
        batch.flags.extend(update.flags)
        self.routed_events += len(events)
        await self._dispatch(batch)

    async def _dispatch(self, batch: Batch) -> None:
        # Wait for room first: between the Redis write and the inbox append there is no await, so
        # a Redis rebuild always finds every batch in Redis either committed or in the inbox.
        waited = time.monotonic()
        while self._inbox_events >= self._inbox_max:
            self._inbox_changed.clear()
            await self._inbox_changed.wait()
        self.backpressure_s += time.monotonic() - waited
        await self.live.write(batch)
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

    def _merge_inbox(self) -> Batch:
        merged = Batch()
        while self._inbox and len(merged) < self.settings.batch_max * 2:
            merged.extend(self._inbox.popleft())
        return merged

    def _release(self, batch: Batch) -> None:
        self._inbox_events -= len(batch)
        self._inbox_changed.set()

    async def _store(self, batch: Batch) -> None:
        """Commit, or spool; with a full spool, keep retrying (backpressure) unless shutting down."""
        while True:
            if self.spool.empty and await self._ready():
                try:
                    await self.db.write(batch)
                    self.committed_events += len(batch)
                    self._release(batch)
                    return
                except DatabaseUnavailable as exc:
                    log.warning("TimescaleDB unavailable (%s): spooling", exc)
                except Exception:
                    # A batch the database refuses as data is set aside, never retried forever.
                    log.exception("TimescaleDB refused a batch of %d events; kept in the rejects file", len(batch))
                    self.rejected_batches += 1
                    await asyncio.to_thread(_reject, self.spool, batch)
                    self._release(batch)
                    return
            try:
                await asyncio.to_thread(self.spool.append, batch)
                self.spooled_batches += 1
                self._release(batch)
                await self._drain_spool()
                return
            except SpoolFull as exc:
                # Keep the batch: the inbox fills, the router waits, adapters wait on the queue.
                log.error("SPOOL FULL: %s; backpressure until TimescaleDB answers", exc)
                await asyncio.sleep(_RETRY_S)
                await self._drain_spool()

    async def _ready(self) -> bool:
        if not await self.db.available():
            return False
        try:
            await self.db.ensure_schema()
        except DatabaseUnavailable:
            return False
        return True

    async def _drain_spool(self) -> bool:
        """Replay the spool in order; True when it is empty afterwards."""
        if self.spool.empty:
            return True
        if not await self._ready():
            return False
        offset = 0
        try:
            while offset < self.spool.bytes:
                chunk, offset = await asyncio.to_thread(self.spool.read_chunk, offset, self.settings.batch_max)
                try:
                    await self.db.write(chunk)
                except DatabaseUnavailable:
                    raise
                except Exception:
                    # never block the spool on data the database refuses: set it aside, go on
                    log.exception("TimescaleDB refused %d spooled events; kept in the rejects file", len(chunk))
                    self.rejected_batches += 1
                    await asyncio.to_thread(_reject, self.spool, chunk)
        except DatabaseUnavailable:
            return False
        replayed = self.spool.pending_events
        await asyncio.to_thread(self.spool.clear)
        self.committed_events += replayed
        log.info("spool replayed: %d events written to TimescaleDB", replayed)
        return True

    async def _housekeeping(self, final: bool = False) -> None:
        """Spool replay, stale coverage at start, Redis rebuild: each only when the database answers."""
        if not await self._drain_spool():
            return
        if not self._stale_closed:
            try:
                own_cascades = [c.id for c in self.detector.active]
                closed, ended = await self.db.close_stale(self._own_connections, own_cascades)
                self._stale_closed = True
                if closed or ended:
                    log.info("a previous run left %d streams and %d cascades open: closed them", closed, ended)
                if ended:
                    self.live.needs_rebuild = True  # its Redis copy still shows them active
            except DatabaseUnavailable:
                return
        if self.live.needs_rebuild and self.live.available and not final:
            await self._rebuild_live()

    async def _rebuild_live(self) -> None:
        """Runs between database batches: all routed events are committed, spooled (the spool is
        empty here) or waiting in the inbox, and batches routed meanwhile also feed the rebuild."""
        if not await self.live.begin_rebuild():
            return
        try:
            liqs, cascades = await self.db.fetch_window(now_ms() - WINDOW_MS - TRIM_MARGIN_MS)
        except DatabaseUnavailable:
            self.live.abort_rebuild()
            return

        def current_cascades() -> list[Cascade]:
            merged = {c.id: c for c in cascades}
            merged.update((c.id, c) for c in self.detector.active)
            return list(merged.values())

        def pending() -> list[Liquidation]:
            return [ev for b in self._inbox for ev in b.liquidations]

        await self.live.rebuild(liqs, current_cascades, pending)

    async def emergency_spool(self) -> int:
        """Shutdown ran out of time: spool what is still in memory (idempotent if it was committed)."""
        batches = ([self._current] if self._current is not None else []) + list(self._inbox)
        self._inbox.clear()
        self._current = None
        lost = 0
        for batch in batches:
            try:
                await asyncio.to_thread(self.spool.append, batch)
            except SpoolFull:
                lost += len(batch)
        if lost:
            log.error("shutdown with a full spool: %d events not stored", lost)
        return lost

    def state(self) -> dict[str, Any]:
        return {
            "queue": self.queue.qsize(),
            "inbox": self._inbox_events,
            "routed_events": self.routed_events,
            "committed_events": self.committed_events,
            "spool": self.spool.state(),
            "backpressure_s": round(self.backpressure_s, 1),
            "rejected_batches": self.rejected_batches,
            "invalid_events": self.invalid_events,
        }


def _reject(spool: Spool, batch: Batch) -> None:
    with (spool.path.parent / "rejected.ndjson").open("a") as f:
        f.write(encode_batch(batch) + "\n")
