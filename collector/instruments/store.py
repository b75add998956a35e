"""The venues' instrument lists in TimescaleDB (`instruments`, db/migrations/0011_instruments.sql).

`save()` writes one venue's whole list in one transaction: every instrument upserted (a delisted
one that is listed again gets a new `listed_at`), and the venue's rows it no longer lists stamped
`delisted_at`. `load()` reads back the rows still listed and when they were last refreshed: the
list the collector starts on when the venue's REST API cannot be reached.

One short connection per call (a few calls an hour), with deadlines: connecting
(`db_connect_timeout_s`), each statement (`db_statement_timeout_s`, server side) and the whole call
(`db_batch_timeout_s`, client side). Every failure (connection refused, timeout, missing table or
grant, bad data) is a `StoreError`: the catalog logs it and carries on with what it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg

from collector.health import one_line
from collector.instruments.base import valid_coin
from common.config import Settings
from common.instruments import BASE_UNIT, CONTRACTS, DATED, PERPETUAL, Instrument
from common.symbols import valid_symbol

T = TypeVar("T")

_UPSERT = """
INSERT INTO instruments AS i (exchange, symbol, base, quote, contract_type, multiplier, size_unit,
                              contract_size, expiry, status, listed_at, delisted_at, updated_at)
SELECT %(exchange)s, u.symbol, u.base, u.quote, u.contract_type, u.multiplier, u.size_unit,
       u.contract_size, u.expiry, u.status, %(now)s, NULL, %(now)s
FROM unnest(%(symbol)s::text[], %(base)s::text[], %(quote)s::text[], %(contract_type)s::text[],
            %(multiplier)s::numeric[], %(size_unit)s::text[], %(contract_size)s::numeric[],
            %(expiry)s::text[], %(status)s::text[])
     AS u(symbol, base, quote, contract_type, multiplier, size_unit, contract_size, expiry, status)
ON CONFLICT (exchange, symbol) DO UPDATE SET
    base = EXCLUDED.base, quote = EXCLUDED.quote, contract_type = EXCLUDED.contract_type,
    multiplier = EXCLUDED.multiplier, size_unit = EXCLUDED.size_unit,
    contract_size = EXCLUDED.contract_size, expiry = EXCLUDED.expiry, status = EXCLUDED.status,
    listed_at = CASE WHEN i.delisted_at IS NULL THEN i.listed_at ELSE EXCLUDED.listed_at END,
    delisted_at = NULL,
    updated_at = EXCLUDED.updated_at
"""
_DELIST = """
UPDATE instruments SET delisted_at = %(now)s, updated_at = %(now)s
WHERE exchange = %(exchange)s AND delisted_at IS NULL AND NOT (symbol = ANY(%(symbol)s::text[]))
"""
_LOAD = """
SELECT symbol, base, quote, contract_type, multiplier, size_unit, contract_size, expiry, status, updated_at
FROM instruments WHERE exchange = %s AND delisted_at IS NULL
"""


class StoreError(RuntimeError):
    """The instrument list could not be written or read now (the message says why, on one line)."""


@dataclass(frozen=True)
class StoredList:
    instruments: dict[str, Instrument]  # by venue symbol, `listed=True`: a venue listed them
    stored_ms: int  # when the newest of them was last refreshed


class InstrumentStore:
    def __init__(
        self,
        database_url: str,
        *,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
        deadline: float = 60.0,
    ) -> None:
        self._url = database_url
        self._connect_timeout = connect_timeout
        self._statement_ms = round(statement_timeout * 1000)
        self._deadline = deadline

    @classmethod
    def from_settings(cls, settings: Settings) -> InstrumentStore:
        return cls(
            settings.database_url,
            connect_timeout=settings.db_connect_timeout_s,
            statement_timeout=settings.db_statement_timeout_s,
            deadline=settings.db_batch_timeout_s,
        )

    async def save(self, exchange: str, instruments: Iterable[Instrument], now_ms: int | None = None) -> int:
        """Store `exchange`'s whole current list; returns how many of its rows were newly delisted."""
        rows = [i for i in instruments if i.exchange == exchange]
        now = datetime.now(UTC) if now_ms is None else datetime.fromtimestamp(now_ms / 1000, UTC)
        params: dict[str, Any] = {
            "exchange": exchange,
            "now": now,
            "symbol": [i.symbol for i in rows],
            "base": [i.base for i in rows],
            "quote": [i.quote for i in rows],
            "contract_type": [i.contract_type for i in rows],
            "multiplier": [i.multiplier for i in rows],
            "size_unit": [i.size_unit for i in rows],
            "contract_size": [i.contract_size for i in rows],
            "expiry": [i.expiry for i in rows],
            "status": [i.status for i in rows],
        }

        async def op(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                await conn.execute(_UPSERT, params)
                cur = await conn.execute(_DELIST, params)
                return cur.rowcount

        return await self._run(op, f"storing {len(rows)} {exchange} instruments")

    async def load(self, exchange: str) -> StoredList | None:
        """`exchange`'s stored list (rows not delisted), or None when nothing is stored."""

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(_LOAD, (exchange,))
            return await cur.fetchall()

        rows = await self._run(op, f"reading the stored {exchange} instruments")
        instruments: dict[str, Instrument] = {}
        newest: datetime | None = None
        for row in rows:
            instrument = _instrument(exchange, row)
            if instrument is not None:
                instruments[instrument.symbol] = instrument
                newest = row[9] if newest is None else max(newest, row[9])
        if not instruments or newest is None:
            return None
        return StoredList(instruments, int(newest.timestamp() * 1000))

    async def _run(self, op: Callable[[psycopg.AsyncConnection[Any]], Coroutine[Any, Any, T]], what: str) -> T:
        async def whole() -> T:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                connect_timeout=max(1, round(self._connect_timeout)),
                options=f"-c statement_timeout={self._statement_ms}",
            )
            async with conn:
                return await op(conn)

        try:
            return await asyncio.wait_for(whole(), timeout=self._deadline)
        except TimeoutError:
            raise StoreError(f"{what}: no answer within {self._deadline:g} s") from None
        except psycopg.Error as exc:
            raise StoreError(f"{what}: {one_line(str(exc)) or type(exc).__name__}") from None


def _instrument(exchange: str, row: tuple[Any, ...]) -> Instrument | None:
    """A stored row as an Instrument; None for a row that no longer passes the checks."""
    symbol, base, quote, contract_type, multiplier, size_unit, contract_size, expiry, status, _ = row
    if not (valid_symbol(symbol) and valid_coin(base) and valid_coin(quote)):
        return None
    if contract_type not in (PERPETUAL, DATED) or size_unit not in (BASE_UNIT, CONTRACTS):
        return None
    return Instrument(
        exchange=exchange,
        symbol=symbol,
        base=base,
        quote=quote,
        contract_type=contract_type,
        multiplier=_plain(multiplier),
        size_unit=size_unit,
        contract_size=_plain(contract_size),
        expiry=expiry,
        status=status,
    )


def _plain(value: Decimal) -> Decimal:
    """numeric comes back as it was written (`1000`), but normalise `1000.0` the same way anyway."""
    return value.to_integral_value() if value == value.to_integral_value() else value.normalize()
