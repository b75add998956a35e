"""The `alerts` table (db/migrations/0013_alerts.sql): one row per alert and channel, the outbox of
the deliveries. Inserting is idempotent on (rule, key, channel): an alert re-read after a restart
or reported by two collectors is stored, and therefore sent, once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert on one channel, as stored."""

    id: int
    rule: str
    kind: str
    key: str
    fired_at: datetime
    message: str
    channel: str
    event: dict[str, Any]
    attempts: int = 0


class AlertStore:
    def __init__(self, database_url: str, *, connect_timeout: float = 5.0, max_size: int = 4) -> None:
        self._pool = AsyncConnectionPool(
            database_url,
            open=False,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            check=AsyncConnectionPool.check_connection,
        )
        self._timeout = connect_timeout

    async def open(self) -> None:
        await self._pool.open()
        await self._pool.wait(timeout=self._timeout)

    async def close(self) -> None:
        await self._pool.close()

    async def newest_candles(self, exchange: str, since_ms: int) -> dict[str, int]:
        """symbol -> open time (ms) of its newest stored candle on `exchange` since `since_ms`: the
        collector writes each symbol's open minute every few seconds while its stream flows."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT symbol, (extract(epoch FROM max(time)) * 1000)::bigint FROM candles"
                " WHERE exchange = %s AND time >= to_timestamp(%s / 1000.0) GROUP BY symbol",
                (exchange, since_ms),
            )
            return {str(symbol): int(ms) for symbol, ms in await cur.fetchall()}

    async def insert(
        self, rule: str, kind: str, key: str, message: str, event: dict[str, Any], channels: tuple[str, ...]
    ) -> list[Delivery]:
        """Store the alert once per channel; return only the rows inserted now (new deliveries)."""
        out: list[Delivery] = []
        async with self._pool.connection() as conn:
            for channel in channels:
                cur = await conn.execute(
                    """INSERT INTO alerts (rule, kind, key, message, channel, event)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (rule, key, channel) DO NOTHING
                       RETURNING id, fired_at""",
                    (rule, kind, key, message, channel, Jsonb(event)),
                )
                row = await cur.fetchone()
                if row is not None:
                    out.append(Delivery(row[0], rule, kind, key, row[1], message, channel, event))
        return out

    async def exists(self, rule: str, key: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM alerts WHERE rule = %s AND key = %s LIMIT 1", (rule, key))
            return await cur.fetchone() is not None

    async def record(self, id_: int, status: str, attempts: int, last_error: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE alerts SET status = %s, attempts = %s, last_error = %s WHERE id = %s",
                (status, attempts, last_error[:2000], id_),
            )

    async def undelivered(self) -> list[Delivery]:
        """Rows still `fired` (the previous run stopped before their delivery ended)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """SELECT id, rule, kind, key, fired_at, message, channel, event, attempts
                   FROM alerts WHERE status = 'fired' ORDER BY id"""
            )
            rows = await cur.fetchall()
        return [
            Delivery(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] if isinstance(r[7], dict) else json.loads(r[7]), r[8]
            )
            for r in rows
        ]
