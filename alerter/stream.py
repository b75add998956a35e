"""Reading `{prefix}stream:events` (appended by the collector) with the consumer group `alerter`.

Entries have fields `kind` (`liquidations` | `cascades`, a collector batch each; `liquidation` |
`cascade`, one each) and `data` (JSON). An entry is XACKed once
handled (rules applied, alerts stored); a restart first re-reads this consumer's pending entries
(XREADGROUP from 0), then claims entries another consumer left pending longer than
LIQ_ALERT_CLAIM_IDLE_S (XAUTOCLAIM), then reads new ones (`>`). Nothing is lost, and the dedup keys
and the `alerts` table's unique key make sure nothing fires twice. An entry that cannot be decoded
is logged and acknowledged (it would fail the same way forever). A Redis or database error leaves
the entry pending; it is re-read after a pause.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger("alerter.stream")

GROUP = "alerter"
_BATCH = 100

Handler = Callable[[str, Any, bool], Awaitable[None]]


# Entries holding a collector batch: a list of what the single kind carries (collectors before the
# batch entries wrote the single kinds; an upgrade still reads what they left).
BATCH_KINDS = {"liquidations": "liquidation", "cascades": "cascade"}


def stream_key(prefix: str) -> str:
    return f"{prefix}stream:events"


def decode(fields: dict[str, str]) -> tuple[str, Any] | None:
    """(kind, data): `liquidation` and `cascade` carry an object, BATCH_KINDS a list of such
    objects; anything else is None."""
    kind = fields.get("kind", "")
    try:
        data = json.loads(fields.get("data", ""))
    except ValueError:
        return None
    if kind in BATCH_KINDS:
        return (kind, data) if isinstance(data, list) else None
    if kind not in BATCH_KINDS.values() or not isinstance(data, dict):
        return None
    return kind, data


class StreamReader:
    def __init__(
        self, redis: aioredis.Redis, prefix: str, consumer: str, *, claim_idle_s: float, block_ms: int = 500
    ) -> None:
        self.redis = redis
        self.key = stream_key(prefix)
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.block_ms = block_ms
        self.handled = 0  # entries acknowledged (tests)

    async def ensure_group(self) -> None:
        """Create the group at the stream's start (MKSTREAM); old events are skipped by age, not here."""
        try:
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, handle: Handler, stop: asyncio.Event) -> None:
        backlog = True  # (re)read our own pending entries first
        while not stop.is_set():
            try:
                if backlog:
                    await self._backlog(handle, stop)
                    backlog = False
                reply = await self.redis.xreadgroup(
                    GROUP, self.consumer, {self.key: ">"}, count=_BATCH, block=self.block_ms
                )
                for _key, entries in reply or []:
                    for entry_id, fields in entries:
                        if stop.is_set():
                            return  # unacknowledged: read again after the restart
                        await self._one(handle, entry_id, fields, recovered=False)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("Redis stream read failed: %s; retrying in 1 s", exc)
                backlog = True
                await _pause(stop, 1.0)
            except Exception:
                log.exception("handling a stream entry failed; it stays pending, retrying in 1 s")
                backlog = True
                await _pause(stop, 1.0)

    async def _backlog(self, handle: Handler, stop: asyncio.Event) -> None:
        start = "0"
        while not stop.is_set():  # our own pending entries (a previous run stopped before XACK)
            reply = await self.redis.xreadgroup(GROUP, self.consumer, {self.key: start}, count=_BATCH)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            for entry_id, fields in entries:
                await self._one(handle, entry_id, fields, recovered=True)
                start = entry_id
        cursor = "0-0"
        while not stop.is_set():  # entries another consumer left pending
            res = await self.redis.xautoclaim(
                self.key, GROUP, self.consumer, min_idle_time=self.claim_idle_ms, start_id=cursor, count=_BATCH
            )
            cursor, claimed = res[0], res[1]
            for entry_id, fields in claimed:
                await self._one(handle, entry_id, fields, recovered=True)
            if cursor in ("0-0", b"0-0") or not claimed:
                break

    async def _one(self, handle: Handler, entry_id: str, fields: dict[str, str] | None, *, recovered: bool) -> None:
        decoded = decode(fields or {})
        if decoded is None:
            if fields:  # a deleted entry (trimmed while pending) has no fields: just acknowledge it
                log.warning("stream entry %s cannot be decoded: %.200r", entry_id, fields)
        else:
            await handle(decoded[0], decoded[1], recovered)
        await self.redis.xack(self.key, GROUP, entry_id)
        self.handled += 1


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
