"""Leadership among collectors writing one record (two hosts, one TimescaleDB and one Redis).

Every collector stores every liquidation (the dedup key makes the second copy a no-op), so two
collectors give one record with coverage that is the union of theirs. A few things must be done by
one of them at a time, the leader: writing cascades (each collector detects them, but two would
name the same cascade differently when one missed its first member), ending the cascades and
closing the coverage a dead collector left open, and the periodic retention job.

The leader is whoever holds a session-level PostgreSQL advisory lock on its own connection. The lock
goes with the connection: a leader that dies, or whose connection breaks, loses it, and the other
collector takes it at its next attempt (`INTERVAL_S`). Every call has a deadline, so a database
that hangs makes nobody leader (nothing is lost by that: liquidations and coverage are written by
every collector; cascades wait in the detector until a leader writes their next update).

A takeover (leadership won after the first attempt: the leader died or lost its connection) first
runs `before_takeover` (the pipeline reads the cascades the previous leader left active, to carry
them on under their stored ids); only then does `is_leader` turn true. A failure there releases
the lock, to be tried again at the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from collector.storage.timescale import DatabaseUnavailable
from common.config import Settings

log = logging.getLogger("collector.leader")

LOCK_ID = 0x6C69717561676702  # "liquagg" + 2 (the migration runner holds + 1)
INTERVAL_S = 2.0


class Leadership:
    def __init__(self, settings: Settings, interval_s: float = INTERVAL_S) -> None:
        self._url = str(settings.database_url)
        self._connect_timeout = settings.db_connect_timeout_s
        self._deadline = settings.db_statement_timeout_s
        self._interval = interval_s
        self._conn: psycopg.AsyncConnection | None = None
        self.is_leader = False
        self.before_takeover: Callable[[], Awaitable[None]] | None = None
        self._attempted = False  # a win after the first attempt is a takeover

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._attempt()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._interval)
        finally:
            await self._drop()

    async def first(self, within_s: float) -> None:
        """One attempt before the streams start, so that a collector alone leads from its first batch
        (a database that does not answer holds the start up for `within_s` at most)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempt(), timeout=within_s)

    async def _attempt(self) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=int(max(1, self._connect_timeout))
                    )
                if self.is_leader:
                    await self._conn.execute("SELECT 1")  # still holding it: the connection is alive
                    return
                cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_ID,))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    if self._attempted and self.before_takeover is not None:
                        await self.before_takeover()
                    self.is_leader = True
                    log.info("this collector leads: it writes cascades and runs the periodic jobs")
        except (psycopg.Error, OSError, TimeoutError, DatabaseUnavailable) as exc:
            if self.is_leader:
                log.warning("leadership lost (the lock's connection failed): %s", " ".join(str(exc).split()))
            await self._drop()
        finally:
            self._attempted = True

    async def _drop(self) -> None:
        self.is_leader = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=1.0)
