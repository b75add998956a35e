"""The Redis live view writer (layout and codecs in common/live_view.py).

One pipeline per batch: ZADD the liquidations (score = exchange time; members are deterministic,
so a re-delivered event is a no-op), HSET changed cascades, and at most once a second trim the
window and drop cascades that ended more than 60 minutes ago. `publish()` refreshes the health
and collector hashes about every second and notices a Redis that came back or lost its data.

Redis errors never stop the collector: the writer marks itself unavailable and `needs_rebuild`,
skips Redis until a probe answers, and the pipeline then rebuilds the window from TimescaleDB
(`rebuild()`) and sets the `built` marker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from collector.health import now_ms
from collector.storage.spool import Batch
from common.events import Cascade, Liquidation
from common.live_view import TRIM_MARGIN_MS, WINDOW_MS, Keys, decode_cascade, encode_cascade, encode_liquidation

log = logging.getLogger("collector.redis")

_REBUILD_CHUNK = 10_000
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:")


def _fixed(amount: Decimal) -> str:
    """`f"{amount:f}"`: str() is the same text, and cheaper, whenever it has no exponent."""
    text = str(amount)
    return f"{amount:f}" if "E" in text else text


def fast_member(ev: Liquidation) -> str:
    """`encode_liquidation(ev)` byte for byte, without json.dumps when every text field is plain.

    The hot path encodes every event; the f-string is several times faster. Text with anything
    that JSON would escape falls back to the shared codec (tests check both agree).
    """
    if not (_PLAIN.issuperset(ev.exchange) and _PLAIN.issuperset(ev.symbol) and _PLAIN.issuperset(ev.source)):
        return encode_liquidation(ev)
    sampled = "true" if ev.sampled else "false"
    return (
        f'[{ev.key},"{ev.exchange}","{ev.symbol}","{ev.side.value}","{_fixed(ev.quantity)}","{_fixed(ev.price)}",'
        f'"{_fixed(ev.value_usd)}",{ev.time_ms},"{ev.source}",{sampled}]'
    )


def _zadd_mapping(events: Iterable[Liquidation]) -> dict[str | bytes, bytes | float | int | str]:
    """ZADD's member -> score, both already bytes: redis-py then skips its per-argument type checks."""
    return {fast_member(e).encode(): b"%d" % e.time_ms for e in events}


class RedisLive:
    def __init__(self, redis_url: str, prefix: str, *, timeout: float = 2.0) -> None:
        self.keys = Keys(prefix)
        self._url = redis_url
        self._timeout = timeout
        self._client: aioredis.Redis | None = None
        self.available = False
        # Decided by the first probe: a present `built` marker means the view is complete (a restart
        # after a clean stop); the pipeline forces a rebuild when the spool held anything at start.
        self.needs_rebuild = False
        self._first_probe = True
        self.rebuilt_ms: int | None = None
        self._last_trim = 0.0
        self._ended: dict[int, int] = {}  # cascade id -> end ms, to drop an hour after its end
        self._lock = asyncio.Lock()  # one batch write at a time; the rebuild's swap excludes them
        self._rebuilding = False
        # Scratch key of a rebuild (lives for seconds): a new window is assembled here, then swapped in.
        self._scratch = f"{self.keys.liqs}:rebuild"
        # Set when a rebuild starts and WATCHed by its swap: a FLUSH meanwhile (which also empties the
        # scratch key) aborts the swap instead of stamping `built` on an empty window.
        self._token = f"{self.keys.liqs}:rebuild:token"
        self.errors = 0

    async def open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout, decode_responses=False
        )
        await self.probe()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # type: ignore[attr-defined]  # the stubs predate aclose
            self._client = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisLive.open() was not called")
        return self._client

    async def probe(self) -> bool:
        """Ping, and check the `built` marker; a missing marker means the window must be rebuilt."""
        try:
            built = await self.client.exists(self.keys.built)
            if self._first_probe and built:
                last = await self.client.hget(self.keys.collector, "state")
                if last is not None and not json.loads(last).get("stopped"):
                    # the previous run was killed: Redis may hold events that never reached TimescaleDB
                    log.warning("previous collector did not stop cleanly: rebuilding the Redis live view")
                    self.needs_rebuild = True
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        self._first_probe = False
        if not self.available:
            log.info("Redis answers at %s", self.keys.prefix)
        self.available = True
        if not built and not self.needs_rebuild:
            log.warning("Redis live view has no 'built' marker (flushed or new): rebuilding from TimescaleDB")
            self.needs_rebuild = True
        return True

    async def write(self, batch: Batch) -> bool:
        """One pipeline for the batch; False when Redis is unavailable (TimescaleDB still gets it)."""
        if not self.available:
            return False
        async with self._lock:
            return await self._write(batch)

    async def _write(self, batch: Batch) -> bool:
        pipe = self.client.pipeline(transaction=False)
        if batch.liquidations:
            members = _zadd_mapping(batch.liquidations)
            pipe.zadd(self.keys.liqs, members)
            if self._rebuilding:
                pipe.zadd(self._scratch, members)
        if batch.cascades:
            pipe.hset(self.keys.cascades, mapping={str(c.id): encode_cascade(c) for c in batch.cascades})
            for c in batch.cascades:
                if not c.active:
                    self._ended[c.id] = c.end_ms
        self._trim(pipe)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        return True

    def _trim(self, pipe: Any) -> None:
        now = time.monotonic()
        if now - self._last_trim < 1.0:
            return
        self._last_trim = now
        cutoff = now_ms() - WINDOW_MS - TRIM_MARGIN_MS
        pipe.zremrangebyscore(self.keys.liqs, "-inf", f"({cutoff}")
        old = [cid for cid, end in self._ended.items() if end < now_ms() - WINDOW_MS]
        if old:
            pipe.hdel(self.keys.cascades, *map(str, old))
            for cid in old:
                del self._ended[cid]

    async def publish(self, health: dict[str, dict[str, Any]], state: dict[str, Any]) -> None:
        """Health and collector hashes; also probes a Redis that was unavailable."""
        if not await self.probe():
            return
        state = {**state, "redis_rebuilt_ms": self.rebuilt_ms}
        pipe = self.client.pipeline(transaction=False)
        if health:
            pipe.hset(self.keys.health, mapping={k: json.dumps(v) for k, v in health.items()})
        pipe.hset(self.keys.collector, mapping={"state": json.dumps(state)})
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self._lost(exc)

    async def begin_rebuild(self) -> bool:
        """Start a rebuild: from now on every write also goes to the scratch key."""
        try:
            await self.client.pipeline(transaction=True).delete(self._scratch).set(self._token, now_ms()).execute()
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        self._rebuilding = True
        return True

    async def rebuild(
        self,
        liquidations: list[Liquidation],
        cascades: Callable[[], Iterable[Cascade]],
        pending: Callable[[], list[Liquidation]],
    ) -> bool:
        """Replace the window by what TimescaleDB holds plus `pending()` (not committed yet).

        Members go to a scratch key that concurrent writes also feed; under the write lock, the
        scratch key then replaces the window in one MULTI/EXEC, so stale members (events a killed
        process put in Redis but never committed) disappear and nothing new is lost.
        """
        try:
            for start in range(0, len(liquidations), _REBUILD_CHUNK):
                chunk = liquidations[start : start + _REBUILD_CHUNK]
                await self.client.zadd(self._scratch, _zadd_mapping(chunk))
            stale = await self._stale_cascades()
            async with self._lock, self.client.pipeline(transaction=True) as pipe:
                await pipe.watch(self._token)
                if not await pipe.exists(self._token):
                    raise WatchError("rebuild token gone")
                pipe.multi()
                extra = pending()
                if extra:
                    pipe.zadd(self._scratch, _zadd_mapping(extra))
                pipe.zunionstore(self.keys.liqs, [self._scratch])  # an absent scratch key empties the window
                pipe.delete(self._scratch, self._token)
                if stale:
                    pipe.hdel(self.keys.cascades, *stale)
                mapping: dict[str | bytes, bytes | float | int | str] = {
                    str(c.id): encode_cascade(c) for c in cascades()
                }
                if mapping:
                    pipe.hset(self.keys.cascades, mapping=mapping)
                pipe.set(self.keys.built, str(now_ms()))
                await pipe.execute()
                self._rebuilding = False
        except WatchError:
            # Redis was flushed while we assembled the window: start over on the next round.
            log.warning("Redis was flushed during the live-view rebuild: rebuilding again")
            self._rebuilding = False
            self.needs_rebuild = True
            return False
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        self.needs_rebuild = False
        self.rebuilt_ms = now_ms()
        log.info("Redis live view rebuilt: %d liquidations in the window", len(liquidations) + len(extra))
        return True

    def abort_rebuild(self) -> None:
        self._rebuilding = False

    async def _stale_cascades(self) -> list[bytes]:
        """Ended cascades older than the window that a previous run left in the hash."""
        stale: list[bytes] = []
        for cid, raw in (await self.client.hgetall(self.keys.cascades)).items():
            c = decode_cascade(raw)
            if not c.active and c.end_ms < now_ms() - WINDOW_MS:
                stale.append(cid)
        return stale

    def _lost(self, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            log.warning("Redis unavailable (%s): TimescaleDB keeps everything, the live view is rebuilt later", exc)
        self.available = False
        self.needs_rebuild = True
        self._rebuilding = False
