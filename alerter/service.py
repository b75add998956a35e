"""The alerter process wired together: rules, Redis stream reader, health poller, store, deliverer.

`AlerterService(settings, rules).run(stop)` returns after `stop` is set: the reader stops before
acknowledging anything more, deliveries get a few seconds to finish (unfinished ones stay `fired`
in `alerts` and are delivered on the next start), then the pool and the Redis client close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from alerter.delivery import Deliverer
from alerter.engine import Engine
from alerter.metrics import AlerterMetrics, CountingStore
from alerter.rules import Rule
from alerter.settings import AlerterSettings
from alerter.stream import BATCH_KINDS, StreamReader

log = logging.getLogger("alerter")

DELIVERY_GRACE_S = 3.0


class AlerterService:
    def __init__(self, settings: AlerterSettings, rules: list[Rule]) -> None:
        self.settings = settings
        self.rules = rules
        c = settings.common
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=c.redis_timeout_s,
            socket_timeout=c.redis_timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self.store = CountingStore(
            settings.database_url, connect_timeout=c.db_connect_timeout_s, max_size=settings.concurrency + 2
        )
        self.deliverer = Deliverer(settings, self.store)
        self.metrics = AlerterMetrics(lambda: self.deliverer.in_flight)
        self.store.metrics = self.metrics
        self.engine = Engine(settings, rules, self.redis, self.store, self.deliverer)
        self.reader = StreamReader(
            self.redis, settings.redis_prefix, settings.consumer, claim_idle_s=settings.claim_idle_s
        )
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        await self.store.open()
        if self.settings.metrics_port:
            self.metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
        try:
            await self.reader.ensure_group()
            for d in await self.store.undelivered():  # the previous run stopped mid-delivery
                self.deliverer.submit(d)
            tasks = [asyncio.create_task(self.reader.run(self._handle, stop), name="stream")]
            if any(r.kind == "stream" for r in self.rules):
                tasks.append(
                    asyncio.create_task(
                        self._every(self.engine.check_health, self.settings.health_interval_s, stop), name="health"
                    )
                )
            if any(r.kind == "volume" for r in self.rules):
                tasks.append(
                    asyncio.create_task(
                        self._every(self.engine.check_volume, self.settings.volume_interval_s, stop), name="volume"
                    )
                )
            self.ready.set()
            log.info("alerter running: %d rules, channels %s", len(self.rules), ", ".join(self.settings.channels()))
            await stop.wait()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.deliverer.close(DELIVERY_GRACE_S)
        finally:
            self.metrics.close()
            await self.store.close()
            with contextlib.suppress(Exception):
                await self.redis.aclose()  # type: ignore[attr-defined]  # the stubs predate aclose

    async def _handle(self, kind: str, data: Any, recovered: bool) -> None:
        single = BATCH_KINDS.get(kind)
        if single is not None:  # one entry a collector batch: a list, in order
            for item in data if isinstance(data, list) else [data]:
                await self._handle(single, item, recovered)
            return
        try:
            await self.engine.handle(kind, data, recovered=recovered)
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:  # a malformed entry: logged, skipped
            log.warning("stream %s entry skipped: %s: %.300r", kind, type(exc).__name__, data)

    @staticmethod
    async def _every(check: Callable[[], Awaitable[None]], interval_s: float, stop: asyncio.Event) -> None:
        """Run a periodic check (stream health, volume) until `stop`; a failed round is logged, not fatal."""
        name = getattr(check, "__name__", "check")
        while not stop.is_set():
            try:
                await check()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("%s: reading Redis failed: %s", name, exc)
            except Exception:
                log.exception("%s failed", name)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
