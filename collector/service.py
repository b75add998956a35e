"""The collector process wired together: adapters, pipeline, writers, heartbeat, retention, shutdown.

`CollectorService(settings).run(stop)` returns after `stop` is set and everything was flushed:
the adapters stop first (they return within a second), the router drains the queue, the database
task commits or spools what is left, then the pools close. The whole shutdown stays inside
`SHUTDOWN_BUDGET_S`; if TimescaleDB is too slow at the end, whatever is still in memory is spooled
(fsync) so that the next start writes it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collector import validation
from collector.health import StreamHealth, now_ms
from collector.leader import Leadership
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.storage.maintenance import FoldState, run_maintenance
from collector.storage.redis_live import RedisLive
from collector.storage.spool import Batch, Spool, disk_error_text
from collector.storage.timescale import DatabaseUnavailable, TimescaleWriter
from common import live_scripts
from common.config import ConfigError, Settings
from common.events import Event

if TYPE_CHECKING:
    from collector.exchanges import ExchangeAdapter
    from collector.instruments.catalog import InstrumentCatalog

log = logging.getLogger("collector.service")

SHUTDOWN_BUDGET_S = 9.0
_ADAPTER_STOP_S = 2.0
_PUBLISH_INTERVAL_S = 1.0
CATALOG_START_S = 20.0  # LIQ_SYMBOLS=ALL: how long start-up waits for the first instrument lists
EXPLICIT_START_S = 5.0  # an explicit LIQ_SYMBOLS: the same, shorter (the list is known without them)
YOUNG_GC_THRESHOLD = 20_000  # gc.set_threshold while running (see `run`)


class CollectorService:
    # The instrument lists' refresh period; None: LIQ_INSTRUMENTS_REFRESH_S (tests shorten it).
    instruments_refresh_s: float | None = None

    def __init__(self, settings: Settings, *, on_redis_batch: Callable[[Batch], None] | None = None) -> None:
        self.settings = settings
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.queue_size)
        self.db = TimescaleWriter(
            settings.database_url,
            settings.reader_password,
            connect_timeout=settings.db_connect_timeout_s,
            statement_timeout=settings.db_statement_timeout_s,
            batch_timeout=settings.db_batch_timeout_s,
        )
        self.live = RedisLive(
            settings.redis_url,
            settings.redis_prefix,
            timeout=settings.redis_timeout_s,
            stream_min_usd=settings.alert_stream_min_usd,
        )
        try:
            self.spool = Spool(settings.spool_dir, settings.spool_max_bytes)
        except OSError as exc:
            raise ConfigError(
                f"LIQ_SPOOL_DIR: cannot use {str(settings.spool_dir)!r} as the spool directory: {disk_error_text(exc)}"
            ) from None
        self.pipeline = Pipeline(settings, self.queue, self.db, self.live, self.spool, on_redis_batch=on_redis_batch)
        self.health: dict[str, StreamHealth] = {}
        self.adapters: dict[str, ExchangeAdapter] = {}
        self.catalog: InstrumentCatalog | None = None
        self._background: list[asyncio.Task[Any]] = []  # the instrument catalog's tasks
        self.sources: dict[str, str] = {}
        self.started_ms = now_ms()
        self.ready = asyncio.Event()
        self.fold = FoldState()  # the leader's view of the rollup fold, for the metrics
        self.metrics = Metrics(self._health_snapshots, self._metric_state, lambda: self.pipeline.liquidations)
        self.leadership = Leadership(settings)
        self.pipeline.is_leader = lambda: self.leadership.is_leader
        self.leadership.before_takeover = self.pipeline.prepare_takeover
        self.pipeline.observe_db = self.metrics.observe_db
        self.pipeline.observe_redis = self.metrics.observe_redis

    async def run(self, stop: asyncio.Event, *, with_adapters: bool = True) -> None:
        await self.db.open()
        try:
            await self.db.ensure_schema()
        except DatabaseUnavailable as exc:
            log.warning("migrations postponed until TimescaleDB answers: %s", exc)
        await self.live.open()
        leadership_stop = asyncio.Event()
        await self.leadership.first(within_s=2.0)
        leadership = asyncio.create_task(self.leadership.run(leadership_stop), name="leadership")
        if self.settings.metrics_port:
            self.metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
        sources = sorted({self.settings.source_for(self.settings.ws_url(name)) for name in self.settings.exchanges})
        # In the background: a database that hangs must not hold up the streams.
        seed = self.pipeline.seed_cascade_baselines(sources)
        self._background.append(asyncio.create_task(seed, name="cascade-baselines"))
        adapter_stop = asyncio.Event()
        router_stop = asyncio.Event()
        adapters = await self._start_adapters(adapter_stop) if with_adapters else []
        router = asyncio.create_task(self.pipeline.run_router(router_stop), name="router")
        database = asyncio.create_task(self.pipeline.run_database(), name="database")
        background_stop = asyncio.Event()
        publisher = asyncio.create_task(self._publish_loop(background_stop), name="publisher")
        maintenance = asyncio.create_task(
            run_maintenance(
                self.settings, background_stop, is_leader=lambda: self.leadership.is_leader, fold=self.fold
            ),
            name="maintenance",
        )
        # Everything allocated so far (modules, clients, pools) lives as long as the process: freezing
        # it keeps full collections, which would otherwise stall the event loop for tens of
        # milliseconds on every pass over it, down to the objects created while running.
        gc.collect()
        gc.freeze()
        # A young collection after 20,000 new container objects instead of 700: at 22,000 liquidations
        # a second the default ran ~50 a second and, with the older passes they set off, took ~8 % of
        # the collector's CPU (4.3 s of collections in one such minute, 0.08 s after; bench_market).
        # Cyclic garbage is still collected, later by at most that many objects.
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_GC_THRESHOLD)
        self.ready.set()
        log.info("collector running: exchanges %s, pid %d", ", ".join(self.settings.exchanges), os.getpid())
        if not validation.HOT_PATH_COMPILED:  # correct without them, half again as slow per event
            log.warning("parse hot path in Python: the C twins are not built (run scripts/build_native.py)")
        if not live_scripts.NATIVE:  # correct without it; ~18 us more per liquidation at the market's rate
            log.warning("live-view encoding in Python: its C twin is not built (run scripts/build_native.py)")
        try:
            await _wait_any(stop, [router, database])
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            deadline = time.monotonic() + SHUTDOWN_BUDGET_S
            log.info("shutting down: stopping adapters, draining %d queued events", self.queue.qsize())
            adapter_stop.set()
            await _finish(adapters, _ADAPTER_STOP_S)
            await _finish(self._background, 1.0)
            router_stop.set()
            await _finish([router], max(0.5, deadline - time.monotonic() - 2.0))
            if not await _finish([database], max(0.5, deadline - time.monotonic() - 1.0)):
                await self.pipeline.emergency_spool()
            background_stop.set()
            await _finish([publisher, maintenance], 1.0)
            with contextlib.suppress(Exception):
                await self.live.publish(self._health_snapshots(), self._state(stopped=True))
            leadership_stop.set()
            await _finish([leadership], 2.0)
            await self.live.close()
            await self.db.close()
            self.metrics.close()
            log.info("collector stopped: %s", self.pipeline.state())

    async def _start_adapters(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The instrument catalog, then one adapter per venue on its symbols.

        LIQ_SYMBOLS=ALL: each adapter follows the venue's list (REST, else the stored list; waited
        for at most `CATALOG_START_S`, then taken up when it comes), and every refresh subscribes
        listings and unsubscribes delistings on the open connections. An explicit list names
        contracts: each venue follows its own spelling of them (`BTCUSDT` is OKX's `BTC-USDT-SWAP`),
        read from its list once known (waited for at most `EXPLICIT_START_S`); a venue without a
        list yet gets the configured spellings unverified, and the symbols a venue does not list
        are warnings (`state()["instruments"]`), so a venue's REST being unreachable never holds
        anything up for long."""
        from collector.exchanges import ADAPTERS  # imported here: nothing connects at import time
        from collector.instruments.catalog import InstrumentCatalog
        from collector.instruments.store import InstrumentStore

        catalog = InstrumentCatalog(
            self.settings, store=InstrumentStore.from_settings(self.settings), refresh_s=self.instruments_refresh_s
        )
        self.catalog = catalog
        catalog.is_leader = lambda: self.leadership.is_leader
        first = asyncio.create_task(catalog.start(), name="instruments-start")
        self._background.append(first)
        # ALL waits for the lists (there is nothing to follow without them); an explicit list waits
        # a little, so that `BTCUSDT` starts as OKX's `BTC-USDT-SWAP` rather than as a refused topic.
        wait_s = CATALOG_START_S if self.settings.all_symbols else EXPLICIT_START_S
        await asyncio.wait({first}, timeout=wait_s)
        if not first.done():
            log.warning("instrument lists not complete after %.0fs: starting with what is known", wait_s)
        tasks: list[asyncio.Task[None]] = []
        for name in self.settings.exchanges:
            url = self.settings.ws_url(name)
            source = self.settings.source_for(url)
            health = StreamHealth(name, source)
            self.health[name] = health
            self.sources[name] = source
            adapter = ADAPTERS[name](
                self.settings,
                self.queue,
                health,
                symbols=catalog.symbols(name),
                candle_symbols=catalog.candle_symbols(name),
            )
            adapter.instrument_of = catalog.lookup
            catalog.watch(name, adapter.contracts.clear)
            self.adapters[name] = adapter
            tasks.append(asyncio.create_task(adapter.run(stop), name=f"adapter-{name}"))

        async def follow() -> None:
            await asyncio.gather(first, return_exceptions=True)
            self._follow_catalog()
            await catalog.run(stop, lambda _diff: self._follow_catalog())

        self._background.append(asyncio.create_task(follow(), name="instruments"))
        self._background.append(asyncio.create_task(self._retry_refused(stop), name="instruments-retry"))
        return tasks

    async def _retry_refused(self, stop: asyncio.Event) -> None:
        """After each successful refresh of a venue's list, its refused topics whose symbol the list
        still names are sent once more (not before: a refusal is not retried in a loop)."""
        seen: dict[str, int] = {}
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            if self.catalog is None:
                continue
            for name, venue in self.catalog.state().items():
                refreshed = int(venue["last_refresh_ms"])
                if refreshed == seen.get(name, refreshed):
                    seen[name] = refreshed
                    continue
                seen[name] = refreshed
                adapter = self.adapters.get(name)
                if adapter is not None and adapter.refused:
                    listed = self.catalog.instruments(name)
                    retried = adapter.retry_refused([s for s in adapter.symbols if s in listed])
                    if retried:
                        log.info("%s: refused topics sent again after the refresh: %d", name, len(retried))

    def _follow_catalog(self) -> None:
        """Each adapter's symbols become the catalog's (only the difference is sent): listings and
        delistings for ALL; for an explicit list, each venue's own spelling once its list is known."""
        if self.catalog is None:
            return
        for name, adapter in self.adapters.items():
            wanted = self.catalog.symbols(name)
            keep = set(wanted)
            gone = [s for s in adapter.symbols if s not in keep]
            have = set(adapter.symbols)
            new = [s for s in wanted if s not in have]
            if gone:
                log.info("%s: %d symbols delisted: unsubscribing them", name, len(gone))
                adapter.remove_symbols(gone)
            if new:
                log.info("%s: following %d more symbols", name, len(new))
                adapter.add_symbols(new, self.catalog.candle_symbols(name))

    def _metric_state(self) -> dict[str, Any]:
        return {**self.pipeline.state(), "fold_behind_s": self.fold.behind_s(time.time())}

    def _health_snapshots(self) -> dict[str, dict[str, Any]]:
        return {name: h.snapshot() for name, h in self.health.items()}

    def _state(self, stopped: bool = False) -> dict[str, Any]:
        return {
            "heartbeat_ms": now_ms(),
            "started_ms": self.started_ms,
            "pid": os.getpid(),
            "sources": self.sources,
            "stopped": stopped,
            "leader": self.leadership.is_leader,
            "instruments": self.catalog.state() if self.catalog is not None else {},
            "instrument_warnings": self.catalog.warnings() if self.catalog is not None else [],
            **self.pipeline.state(),
        }

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.live.publish(self._health_snapshots(), self._state())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_PUBLISH_INTERVAL_S)


async def _wait_any(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Until `stop` is set, or a core task ended (a bug: its exception is raised here)."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in done:
        if task is not stopper and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _finish(tasks: list[asyncio.Task[None]], within: float) -> bool:
    """Wait for tasks to end; cancel them after `within` seconds. True when all ended by themselves."""
    if not tasks:
        return True
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    if pending:
        log.warning("cancelled %s after %.1fs", ", ".join(t.get_name() for t in pending), within)
        await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %r", task.get_name(), task.exception())
    return not pending
