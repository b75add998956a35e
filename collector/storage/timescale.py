"""The TimescaleDB writer: one transaction (one pipelined round trip) per batch, idempotent.

Liquidations go in through `unnest` arrays with `ON CONFLICT DO NOTHING RETURNING`, and the
returned rows (only those really inserted) feed the 1-minute and 1-hour rollup upserts in the same
statement, so the rollups always equal an aggregate over the raw rows, however often a batch is
re-delivered or replayed. Candles, cascades and stream coverage are upserts; earlier cascade
members are flagged with an UPDATE.

Errors: `DatabaseUnavailable` (connection refused or lost, pool timeout) is retried by the caller,
which spools the batch meanwhile; any other `psycopg.Error` means the batch itself is bad and is
raised as is (the caller sets it aside instead of retrying it forever).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.storage.spool import Batch
from common.events import Candle, Cascade, Liquidation, Side, StreamStatus, ms_to_datetime
from db.migrate import migrate

log = logging.getLogger("collector.timescale")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_HOUR_MS = 3_600_000
_PROBE_INTERVAL_S = 1.0
# Rows per INSERT statement: a transaction holds several, so building one never blocks the event
# loop for long (the router keeps feeding Redis meanwhile).
_STATEMENT_ROWS = 2_000

# Arrays travel as text literals built in Python (`_array`): much cheaper than adapting every
# Decimal and datetime one by one; times travel as epoch milliseconds and convert exactly in SQL.
_INSERT_LIQUIDATIONS = """
WITH ins AS (
    INSERT INTO liquidations (time, exchange, symbol, side, quantity, price, value_usd, raw_side,
                              received_at, source, sampled, cascade_id, event_key)
    SELECT 'epoch'::timestamptz + t * interval '1 millisecond', exchange, symbol, side, quantity, price,
           value_usd, raw_side, 'epoch'::timestamptz + r * interval '1 millisecond', source, sampled,
           cascade_id, event_key
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::numeric[], %s::numeric[],
                %s::numeric[], %s::text[], %s::bigint[], %s::text[], %s::boolean[], %s::bigint[], %s::bigint[])
         AS u(t, exchange, symbol, side, quantity, price, value_usd, raw_side, r, source, sampled, cascade_id, event_key)
    ON CONFLICT DO NOTHING
    RETURNING time, exchange, symbol, side, source, quantity, value_usd
), minute AS (
    INSERT INTO liquidations_1m AS r (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
    SELECT time_bucket('1 minute', time), exchange, symbol, side, source, count(*), sum(quantity),
           sum(value_usd), max(value_usd)
    FROM ins GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket, exchange, symbol, side, source) DO UPDATE
    SET events = r.events + EXCLUDED.events, quantity = r.quantity + EXCLUDED.quantity,
        value_usd = r.value_usd + EXCLUDED.value_usd,
        max_value_usd = GREATEST(r.max_value_usd, EXCLUDED.max_value_usd)
    RETURNING 1
), hour AS (
INSERT INTO liquidations_1h AS r (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
SELECT time_bucket('1 hour', time), exchange, symbol, side, source, count(*), sum(quantity),
       sum(value_usd), max(value_usd)
FROM ins GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (bucket, exchange, symbol, side, source) DO UPDATE
SET events = r.events + EXCLUDED.events, quantity = r.quantity + EXCLUDED.quantity,
    value_usd = r.value_usd + EXCLUDED.value_usd,
    max_value_usd = GREATEST(r.max_value_usd, EXCLUDED.max_value_usd)
RETURNING 1
)
SELECT count(*) FROM ins
"""

_UPSERT_CANDLES = """
INSERT INTO candles (time, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::numeric[], %s::numeric[],
                     %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[], %s::boolean[], %s::text[])
ON CONFLICT (exchange, symbol, time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, closed = EXCLUDED.closed,
    source = EXCLUDED.source
"""

# Every hour a candle batch touched, recomputed from all its minutes (after the minute upsert, in
# the same transaction), so candles_1h always equals an aggregate of `candles`. `source` is 'live'
# only when every minute is live: the app recomputes other hours from their live minutes.
# The constant time bounds let the planner skip every chunk outside the batch.
_UPSERT_CANDLES_1H = """
INSERT INTO candles_1h (time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source)
SELECT u.hour, u.exchange, u.symbol, first(c.open, c.time), max(c.high), min(c.low), last(c.close, c.time),
       sum(c.volume), sum(c.quote_volume), count(*),
       CASE WHEN bool_and(c.source = 'live') THEN 'live' ELSE min(c.source) FILTER (WHERE c.source <> 'live') END
FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS u(exchange, symbol, hour)
JOIN candles AS c ON c.exchange = u.exchange AND c.symbol = u.symbol
                 AND c.time >= u.hour AND c.time < u.hour + interval '1 hour'
WHERE c.time >= %s AND c.time < %s
GROUP BY u.hour, u.exchange, u.symbol
ON CONFLICT (exchange, symbol, time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, minutes = EXCLUDED.minutes,
    source = EXCLUDED.source
"""

_UPSERT_CASCADE = """
INSERT INTO cascades (id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges,
                      events_by_exchange, cross_exchange, peak_minute, price_start, price_end,
                      price_move_pct, risk_score, active, source)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE
SET start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, events = EXCLUDED.events,
    quantity = EXCLUDED.quantity, value_usd = EXCLUDED.value_usd, exchanges = EXCLUDED.exchanges,
    events_by_exchange = EXCLUDED.events_by_exchange, cross_exchange = EXCLUDED.cross_exchange,
    peak_minute = EXCLUDED.peak_minute, price_start = EXCLUDED.price_start, price_end = EXCLUDED.price_end,
    price_move_pct = EXCLUDED.price_move_pct, risk_score = EXCLUDED.risk_score, active = EXCLUDED.active
"""

_FLAG_MEMBERS = """
UPDATE liquidations AS l SET cascade_id = u.id
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS u(id, key, time)
WHERE l.event_key = u.key AND l.time = u.time AND l.cascade_id IS DISTINCT FROM u.id
"""

_UPSERT_COVERAGE = """
INSERT INTO stream_coverage AS s (connection_id, exchange, symbols, source, connected_at, last_seen_at,
                                  disconnected_at, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (connection_id) DO UPDATE
SET last_seen_at = GREATEST(s.last_seen_at, EXCLUDED.last_seen_at),
    disconnected_at = COALESCE(s.disconnected_at, EXCLUDED.disconnected_at),
    reason = CASE WHEN s.disconnected_at IS NULL AND EXCLUDED.disconnected_at IS NOT NULL
                  THEN EXCLUDED.reason ELSE s.reason END
"""

_CLOSE_STALE = """
UPDATE stream_coverage SET disconnected_at = last_seen_at, reason = 'collector stopped'
WHERE disconnected_at IS NULL AND NOT (connection_id = ANY(%s::text[]))
"""


_END_STALE_CASCADES = """
UPDATE cascades SET active = false WHERE active AND NOT (id = ANY(%s::bigint[]))
"""


class DatabaseUnavailable(RuntimeError):
    """TimescaleDB does not answer now; the batch was not written (retry later)."""


def to_ms(t: datetime) -> int:
    return (t - _EPOCH) // _MS


class TimescaleWriter:
    """Owns the connection pool; `write()` is the only hot-path entry point."""

    def __init__(self, database_url: str, reader_password: str = "", *, connect_timeout: float = 5.0) -> None:
        self._url = database_url
        self._reader_password = reader_password
        self._timeout = connect_timeout
        self._pool: AsyncConnectionPool | None = None
        self.migrated = False
        self._down = False
        self._next_probe = 0.0
        self.batches = 0
        self.rows_inserted = 0

    async def open(self, wait: float = 10.0) -> None:
        """Open the pool; a database that does not answer yet is not an error (the pool keeps trying)."""
        pool = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=4,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(self._timeout))},
            reconnect_timeout=365 * 86400,  # never give up: the database may be down for a long time
            name="liq-writer",
        )
        self._pool = pool
        await pool.open(wait=False)
        try:
            await pool.wait(timeout=wait)
            self._down = False
        except PoolTimeout:
            self._down = True
            log.warning("TimescaleDB does not answer yet; batches go to the spool until it does")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=2.0)
            self._pool = None

    async def available(self) -> bool:
        """False while the database is known down; probes it at most once a second.

        The pool's own reconnection backs off exponentially (minutes after a long outage), so once
        a direct probe answers, the pool is replaced by a fresh one and writing resumes at once.
        """
        if not self._down:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + _PROBE_INTERVAL_S
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, connect_timeout=2)
            await conn.close()
        except psycopg.OperationalError:
            return False
        await self.close()
        await self.open(wait=self._timeout)
        if not self._down:
            log.info("TimescaleDB answers again")
        return not self._down

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        self._down = True
        self._next_probe = time.monotonic() + _PROBE_INTERVAL_S
        return DatabaseUnavailable(str(exc).strip() or type(exc).__name__)

    async def ensure_schema(self) -> None:
        """Apply pending migrations once (the runner holds an advisory lock)."""
        if self.migrated:
            return
        try:
            applied = await asyncio.to_thread(migrate, self._url, self._reader_password)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))
        self.migrated = True

    async def write(self, batch: Batch) -> int:
        """Write one batch in one transaction; return the liquidations really inserted."""
        liqs = _unique_liquidations(batch.liquidations)
        candles = _last_candles(batch.candles)
        cascades = list({c.id: c for c in batch.cascades}.values())
        coverage = _merge_statuses(batch.statuses)
        inserted = 0
        try:
            async with self._connection() as conn, conn.transaction(), conn.pipeline():
                cur = conn.cursor()
                liq_curs = []
                for start in range(0, len(liqs), _STATEMENT_ROWS):
                    await asyncio.sleep(0)  # let the router run between chunks of CPU work
                    liq_cur = conn.cursor()
                    await liq_cur.execute(
                        _INSERT_LIQUIDATIONS, _liquidation_arrays(liqs[start : start + _STATEMENT_ROWS])
                    )
                    liq_curs.append(liq_cur)
                if batch.flags:
                    ids, keys, times = zip(*batch.flags, strict=True)
                    await cur.execute(_FLAG_MEMBERS, (list(ids), list(keys), [ms_to_datetime(t) for t in times]))
                if candles:
                    await cur.execute(_UPSERT_CANDLES, _candle_arrays(candles))
                    await cur.execute(_UPSERT_CANDLES_1H, _candle_hours(candles))
                if cascades:
                    await cur.executemany(_UPSERT_CASCADE, [_cascade_row(c) for c in cascades])
                if coverage:
                    await cur.executemany(_UPSERT_COVERAGE, coverage)
                for liq_cur in liq_curs:
                    row = await liq_cur.fetchone()
                    inserted += int(row[0]) if row else 0
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        self.batches += 1
        self.rows_inserted += inserted
        return inserted

    async def close_stale(self, own_connections: Iterable[str], own_cascades: Iterable[int]) -> tuple[int, int]:
        """Close what a killed process left open: coverage rows end at their last_seen_at, its
        active cascades end where they are. Returns (coverage rows, cascades) closed."""
        try:
            async with self._connection() as conn, conn.transaction():
                cur = await conn.execute(_CLOSE_STALE, (list(own_connections),))
                closed = cur.rowcount
                cur = await conn.execute(_END_STALE_CASCADES, (list(own_cascades),))
                return closed, cur.rowcount
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def fetch_window(self, since_ms: int) -> tuple[list[Liquidation], list[Cascade]]:
        """Liquidations since `since_ms` and cascades active or ended since then (Redis rebuild)."""
        since = ms_to_datetime(since_ms)
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    """SELECT time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at,
                              source, sampled, cascade_id, event_key
                       FROM liquidations WHERE time >= %s""",
                    (since,),
                )
                liqs = [_liquidation_from_row(r) for r in await cur.fetchall()]
                cur = await conn.execute(
                    """SELECT id, symbol, side, start_time, end_time, events, quantity, value_usd,
                              events_by_exchange, peak_minute, price_start, price_end, risk_score, active, source
                       FROM cascades WHERE active OR end_time >= %s""",
                    (since,),
                )
                cascades = [_cascade_from_row(r) for r in await cur.fetchall()]
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        return liqs, cascades

    def _connection(self) -> Any:
        if self._pool is None or self._down:
            raise DatabaseUnavailable("pool not open")
        return self._pool.connection(timeout=self._timeout)


def _unique_liquidations(events: list[Liquidation]) -> list[Liquidation]:
    """One row per (key, time): the first wins (it carries the cascade id, duplicates do not)."""
    seen: dict[tuple[int, int], Liquidation] = {}
    for ev in events:
        seen.setdefault((ev.key, ev.time_ms), ev)
    return list(seen.values())


def _last_candles(candles: list[Candle]) -> list[Candle]:
    """The latest update per minute: an upsert may not touch one row twice in a statement."""
    last: dict[tuple[str, str, int], Candle] = {}
    for c in candles:
        last[(c.exchange, c.symbol, c.open_ms)] = c
    return list(last.values())


def _merge_statuses(statuses: list[StreamStatus]) -> list[tuple[Any, ...]]:
    """One coverage row per connection for this batch (first and last times, the close if any)."""
    rows: dict[str, list[Any]] = {}
    for s in statuses:
        at = ms_to_datetime(s.at_ms)
        row = rows.get(s.connection_id)
        if row is None:
            row = [s.connection_id, s.exchange, list(s.symbols), s.source, at, at, None, ""]
            rows[s.connection_id] = row
        row[4] = min(row[4], at)
        row[5] = max(row[5], at)
        if s.state == "disconnected" and row[6] is None:
            row[6] = at
            row[7] = s.reason
    return [tuple(r) for r in rows.values()]


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers (ints, Decimals): their str() is valid input."""
    return "{" + ",".join(map(str, values)) + "}"


def _nullable_array(values: Iterable[int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _bool_array(values: Iterable[bool]) -> str:
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


def _text_array(values: list[str]) -> str:
    """A PostgreSQL array literal of strings, each quoted and escaped once per distinct value."""
    quoted = {v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in set(values)}
    return "{" + ",".join(map(quoted.__getitem__, values)) + "}"


def _liquidation_arrays(liqs: list[Liquidation]) -> tuple[str, ...]:
    return (
        _array(e.time_ms for e in liqs),
        _text_array([e.exchange for e in liqs]),
        _text_array([e.symbol for e in liqs]),
        _text_array([e.side.value for e in liqs]),
        _array(e.quantity for e in liqs),
        _array(e.price for e in liqs),
        _array(e.value_usd for e in liqs),
        _text_array([e.raw_side for e in liqs]),
        _array(e.received_ms for e in liqs),
        _text_array([e.source for e in liqs]),
        _bool_array(e.sampled for e in liqs),
        _nullable_array(e.cascade_id for e in liqs),
        _array(e.key for e in liqs),
    )


def _candle_arrays(candles: list[Candle]) -> tuple[list[Any], ...]:
    return (
        [ms_to_datetime(c.open_ms) for c in candles],
        [c.exchange for c in candles],
        [c.symbol for c in candles],
        [c.open for c in candles],
        [c.high for c in candles],
        [c.low for c in candles],
        [c.close for c in candles],
        [c.volume for c in candles],
        [c.quote_volume for c in candles],
        [c.closed for c in candles],
        [c.source for c in candles],
    )


def _candle_hours(candles: list[Candle]) -> tuple[Any, ...]:
    """The (exchange, symbol, hour) keys a batch touched as arrays, plus the hours' overall bounds."""
    keys = sorted({(c.exchange, c.symbol, c.open_ms // _HOUR_MS * _HOUR_MS) for c in candles}, key=lambda k: k[2])
    hours = [ms_to_datetime(k[2]) for k in keys]
    return (
        [k[0] for k in keys],
        [k[1] for k in keys],
        hours,
        hours[0],
        ms_to_datetime(keys[-1][2] + _HOUR_MS),
    )


def _cascade_row(c: Cascade) -> tuple[Any, ...]:
    move = c.price_move_pct
    return (
        c.id,
        c.symbol,
        str(c.side),
        ms_to_datetime(c.start_ms),
        ms_to_datetime(c.end_ms),
        c.count,
        c.quantity,
        c.value_usd,
        list(c.exchanges),
        Jsonb(c.counts),
        c.cross_exchange,
        ms_to_datetime(c.peak_minute_ms) if c.peak_minute_ms else None,
        c.price_start,
        c.price_end,
        None if move is None else round(move, 6),
        c.risk_score,
        c.active,
        c.source,
    )


def _liquidation_from_row(r: tuple[Any, ...]) -> Liquidation:
    return Liquidation(
        exchange=r[1],
        symbol=r[2],
        side=Side(r[3]),
        quantity=r[4],
        price=r[5],
        value_usd=r[6],
        time_ms=to_ms(r[0]),
        received_ms=to_ms(r[8]),
        raw_side=r[7],
        source=r[9],
        sampled=r[10],
        key=r[12],
        cascade_id=r[11],
    )


def _cascade_from_row(r: tuple[Any, ...]) -> Cascade:
    return Cascade(
        id=r[0],
        symbol=r[1],
        side=Side(r[2]),
        start_ms=to_ms(r[3]),
        end_ms=to_ms(r[4]),
        count=r[5],
        quantity=r[6],
        value_usd=r[7],
        counts={k: int(v) for k, v in r[8].items()},
        peak_minute_ms=0 if r[9] is None else to_ms(r[9]),
        price_start=r[10],
        price_end=r[11],
        risk_score=r[12],
        active=r[13],
        source=r[14],
    )
