"""The Redis live view writer (layout and codecs in common/live_view.py, scripts in common/live_scripts.py).

One pipeline per batch: one WRITE script call adds the liquidations (ZADD NX: a re-delivered event
is a no-op) and, for the members that were new, their sums per 10-second bucket; HSET changed
cascades; at most once a second trim the window and drop cascades that ended more than 60 minutes
ago (aggregate keys expire by themselves). `publish()` refreshes the health and collector hashes
about every second and notices a Redis that came back or lost its data.

Every Redis call has a deadline (`timeout`, LIQ_REDIS_TIMEOUT_S: connect, each socket operation,
and twice that for a whole round trip; no client-side retries). Redis errors and deadlines never
stop the collector: the writer marks itself unavailable and `needs_rebuild`, skips Redis until a
probe answers, and the pipeline then rebuilds the window and its sums from TimescaleDB
(`rebuild()`) and sets the `built` marker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from collector.health import now_ms
from collector.storage.spool import Batch
from common.events import Cascade, Liquidation, canonical_text
from common.live_scripts import (
    CLEAR_LUA,
    SWAP_LUA,
    WRITE_LUA,
    clear_keys,
    swap_argv,
    swap_keys,
    write_argv,
    write_keys,
)
from common.live_view import (
    BUCKET_MS,
    COLLECTOR_STALE_MS,
    STREAM_MAXLEN,
    TRIM_MARGIN_MS,
    WINDOW_MS,
    Keys,
    decode_cascade,
    encode_cascade,
    member_text,
    merge_health,
    stream_cascades,
    stream_liquidations,
)

log = logging.getLogger("collector.redis")

_REBUILD_CHUNK = 5_000


def fast_member(ev: Liquidation) -> str:
    """`encode_liquidation(ev)` byte for byte (numbers in canonical text), the hot path's way."""
    return member_text(ev, canonical_text(ev.quantity), canonical_text(ev.price), canonical_text(ev.value_usd))


_OWN_HEALTH_TTL_S = 60  # a collector's own health outlives it this long (readers ignore stale ones)
_FORGET_MS = 86_400_000  # a collector not heard from for a day leaves the list


def _fresh_collectors(raw: dict[bytes, bytes], now: int) -> tuple[dict[str, dict[str, Any]], list[bytes]]:
    """Collectors heard from within COLLECTOR_STALE_MS (instance -> state), and the long gone."""
    fresh: dict[str, dict[str, Any]] = {}
    gone: list[bytes] = []
    for instance, text in raw.items():
        st = json.loads(text)
        age = now - int(st.get("heartbeat_ms") or 0)
        if age <= COLLECTOR_STALE_MS:
            fresh[instance.decode()] = st
        elif age > _FORGET_MS:
            gone.append(instance)
    return fresh, gone


def _summary(instance: str, st: dict[str, Any]) -> dict[str, Any]:
    """One line of the live page's list of collectors."""
    spool = st.get("spool")
    return {
        "instance": instance,
        "leader": st.get("leader"),
        "heartbeat_ms": st.get("heartbeat_ms"),
        "started_ms": st.get("started_ms"),
        "stopped": st.get("stopped", False),
        "database": st.get("database"),
        "spool": spool.get("state") if isinstance(spool, dict) else None,
        "backpressure": st.get("backpressure"),
    }


class _Flushed(Exception):
    """The rebuild token vanished while the window was assembled: Redis was flushed."""


class RedisLive:
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        *,
        timeout: float = 5.0,
        stream_min_usd: Decimal | None = None,
        instance: str | None = None,
    ) -> None:
        self.keys = Keys(prefix)
        # This collector among several writing one record: its own health and state are kept apart.
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        # The alerter's stream: liquidations of at least this USD and every cascade (None: no stream).
        self._stream_min_usd = stream_min_usd
        self._url = redis_url
        self._timeout = timeout
        self._deadline = 2 * timeout  # a whole round trip (a pipeline reads several replies)
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
        self._sha: dict[str, str] = {}  # script -> SHA1, loaded whenever Redis (re)appears
        self.errors = 0

    async def open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._url,
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
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
            async with asyncio.timeout(self._deadline):
                built = await self.client.exists(self.keys.built)
                if self._first_probe and built:
                    last = await self.client.hget(self.keys.collector, "state")
                    if last is not None and not json.loads(last).get("stopped"):
                        # the previous run was killed: Redis may hold events that never reached TimescaleDB
                        log.warning("previous collector did not stop cleanly: rebuilding the Redis live view")
                        self.needs_rebuild = True
                if not self.available:
                    for script in (WRITE_LUA, CLEAR_LUA, SWAP_LUA):
                        self._sha[script] = await self.client.script_load(script)
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

    def _add(self, pipe: Any, events: Iterable[Liquidation], *, live: bool, scratch: bool) -> None:
        """Queue one WRITE call per target (the window, the rebuild's scratch keys) on `pipe`."""
        now = now_ms()
        argv, n = write_argv(events, now - WINDOW_MS - TRIM_MARGIN_MS, now)
        if n:
            for target in ([False] if live else []) + ([True] if scratch else []):
                pipe.evalsha(self._sha[WRITE_LUA], 4, *write_keys(self.keys, target), *argv)

    async def _write(self, batch: Batch) -> bool:
        pipe = self.client.pipeline(transaction=False)
        if batch.liquidations:
            self._add(pipe, batch.liquidations, live=True, scratch=self._rebuilding)
        if batch.cascades:
            pipe.hset(self.keys.cascades, mapping={str(c.id): encode_cascade(c) for c in batch.cascades})
            for c in batch.cascades:
                if not c.active:
                    self._ended[c.id] = c.end_ms
        if self._stream_min_usd is not None:
            self._stream(pipe, batch)
        self._trim(pipe)
        if not len(pipe):
            return True
        try:
            async with asyncio.timeout(self._deadline):
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        return True

    def _stream(self, pipe: Any, batch: Batch) -> None:
        """Append what the alerter may need, in the same round trip (the hot path never waits on it)."""
        floor = self._stream_min_usd
        if floor is not None:
            big = [ev for ev in batch.liquidations if ev.value_usd >= floor]
            if big:
                entry = {"kind": "liquidations", "data": stream_liquidations(big)}
                pipe.xadd(self.keys.stream, entry, maxlen=STREAM_MAXLEN, approximate=True)
        if batch.cascades:
            entry = {"kind": "cascades", "data": stream_cascades(batch.cascades)}
            pipe.xadd(self.keys.stream, entry, maxlen=STREAM_MAXLEN, approximate=True)

    def _trim(self, pipe: Any) -> None:
        now = time.monotonic()
        if now - self._last_trim < 1.0:
            return
        self._last_trim = now
        cutoff = now_ms() - WINDOW_MS - TRIM_MARGIN_MS
        pipe.zremrangebyscore(self.keys.liqs, "-inf", f"({cutoff}")
        pipe.zremrangebyscore(self.keys.agg_keys, "-inf", f"({cutoff - BUCKET_MS}")  # the keys expire
        old = [cid for cid, end in self._ended.items() if end < now_ms() - WINDOW_MS]
        if old:
            pipe.hdel(self.keys.cascades, *map(str, old))
            for cid in old:
                del self._ended[cid]

    async def publish(self, health: dict[str, dict[str, Any]], state: dict[str, Any]) -> None:
        """This collector's health and state, then the view every reader uses: each venue's health
        merged over the collectors heard from within COLLECTOR_STALE_MS (two collectors: a venue is
        down only when both lost it), and the state with a summary of every collector. A stopping
        collector leaves the shared state to a running one. Also probes a Redis that was unavailable."""
        if not await self.probe():
            return
        now = now_ms()
        state = {**state, "redis_rebuilt_ms": self.rebuilt_ms, "instance": self.instance}
        own_health = self.keys.health_of(self.instance)
        try:
            async with asyncio.timeout(self._deadline):
                pipe = self.client.pipeline(transaction=False)
                if health:
                    pipe.hset(own_health, mapping={k: json.dumps(v) for k, v in health.items()})
                    pipe.expire(own_health, _OWN_HEALTH_TTL_S)
                pipe.hset(self.keys.collectors, self.instance, json.dumps(state))
                pipe.hgetall(self.keys.collectors)
                *_, raw = await pipe.execute()
                states, gone = _fresh_collectors(raw, now)
                pipe = self.client.pipeline(transaction=False)
                for instance in states:
                    pipe.hgetall(self.keys.health_of(instance))
                replies = await pipe.execute()
                merged: dict[str, list[dict[str, Any]]] = {}
                for reply in replies:
                    for venue, text in reply.items():
                        merged.setdefault(venue.decode(), []).append(json.loads(text))
                pipe = self.client.pipeline(transaction=False)
                if gone:
                    pipe.hdel(self.keys.collectors, *gone)
                if merged:
                    pipe.hset(
                        self.keys.health, mapping={v: json.dumps(merge_health(s)) for v, s in sorted(merged.items())}
                    )
                running = [i for i, st in states.items() if not st.get("stopped")]
                if not (state.get("stopped") and any(i != self.instance for i in running)):
                    shared = {**state, "collectors": [_summary(i, st) for i, st in sorted(states.items())]}
                    pipe.hset(self.keys.collector, mapping={"state": json.dumps(shared)})
                await pipe.execute()
        except (RedisError, OSError, ValueError) as exc:
            self._lost(exc)

    async def begin_rebuild(self) -> bool:
        """Start a rebuild: clear the scratch keys, set the token; from now on every write also
        goes to the scratch keys."""
        try:
            async with asyncio.timeout(self._deadline):
                await self.client.evalsha(self._sha[CLEAR_LUA], 5, *clear_keys(self.keys), now_ms())
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
        """Replace the window and its sums by what TimescaleDB holds plus `pending()` (not committed yet).

        Members and sums go to scratch keys that concurrent writes also feed; under the write lock,
        one SWAP script then replaces the live keys by them, so stale members (events a killed
        process put in Redis but never committed) disappear with their sums and nothing new is lost.
        """
        extra: list[Liquidation] = []
        try:
            for start in range(0, len(liquidations), _REBUILD_CHUNK):
                pipe = self.client.pipeline(transaction=False)
                self._add(pipe, liquidations[start : start + _REBUILD_CHUNK], live=False, scratch=True)
                async with asyncio.timeout(self._deadline):
                    await pipe.execute()
            stale = await self._stale_cascades()
            async with self._lock:
                pipe = self.client.pipeline(transaction=False)
                extra = pending()
                self._add(pipe, extra, live=False, scratch=True)
                mapping = {str(c.id): encode_cascade(c) for c in cascades()}
                argv = swap_argv(str(now_ms()), stale, mapping)
                pipe.evalsha(self._sha[SWAP_LUA], 11, *swap_keys(self.keys), *argv)
                async with asyncio.timeout(self._deadline):
                    swapped = (await pipe.execute())[-1]
                self._rebuilding = False
                if not swapped:
                    raise _Flushed
        except _Flushed:
            # Redis was flushed while we assembled the window: start over on the next round.
            log.warning("Redis was flushed during the live-view rebuild: rebuilding again")
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
        async with asyncio.timeout(self._deadline):
            raw_all = await self.client.hgetall(self.keys.cascades)
        for cid, raw in raw_all.items():
            c = decode_cascade(raw)
            if not c.active and c.end_ms < now_ms() - WINDOW_MS:
                stale.append(cid)
        return stale

    def _lost(self, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            log.warning(
                "Redis unavailable (%s): TimescaleDB keeps everything, the live view is rebuilt later",
                str(exc) or type(exc).__name__,
            )
        self.available = False
        self.needs_rebuild = True
        self._rebuilding = False
