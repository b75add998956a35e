"""The TimescaleDB writer: one transaction (one pipelined round trip) per batch, idempotent.

The SQL and the encoders live in `timescale_sql.py`; this module owns the connections, the
deadlines and the answer to "was it the batch or the database?".

Deadlines (all from the settings): opening a connection (`db_connect_timeout_s`), each statement
(`db_statement_timeout_s`, the server's `statement_timeout` set at connect), each whole operation
(`db_batch_timeout_s`, on the client: a server that accepts and never answers is caught too; the
stuck task is cancelled, its connection closed by psycopg, and the pool replaced). Migrations run
in a thread of their own, awaited under the same deadline and never started twice.

Errors:
- `DatabaseUnavailable`: the database cannot take anything now (connection refused, reset or
  timed out, server shutting down or starting, too many connections, our statement timeout, a
  deadline, a read-only server, missing grants or tables). Nothing of `remaining` was written; the
  caller spools it and retries later. `status` says "unavailable" or "timeout".
- A batch PostgreSQL refuses for its data (class 22 data exceptions such as a NUL in a text, class
  23 constraints, 54000 "index row size exceeds btree maximum", which psycopg raises as an
  OperationalError, anything else with a SQLSTATE, and client-side encoding errors) never leaves
  `write()`: the batch is split in halves, each written alone, down to the single rows at fault.
  Those come back in `WriteResult.refused`; everything else is committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.storage import timescale_sql as q
from collector.storage.quarantine import Refused
from collector.storage.spool import Batch
from common.events import Cascade, Liquidation, ms_to_datetime
from db.migrate import migrate

log = logging.getLogger("collector.timescale")
# Coverage rows not refreshed for this long belong to a collector that is gone (heartbeats: every 5 s).
STALE_COVERAGE_MS = 15_000

T = TypeVar("T")

_PROBE_INTERVAL_S = 1.0

# SQLSTATEs that say "the server or the connection", not "this batch": connection exceptions (08),
# transaction rollbacks such as deadlocks (40), insufficient resources (53), objects in use (55),
# operator intervention and shutdowns (57), system errors (58), internal errors (XX)...
_OUTAGE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "XX"})
# ... a read-only or timed-out session, failed authentication, a missing database, and a schema or
# grants that are not what the migrations made: no row is at fault, so no row is set aside.
_OUTAGE_CODES = frozenset({"25006", "25P03", "28000", "28P01", "3D000", "42501", "42P01", "42703", "42883"})
_QUERY_CANCELED = "57014"  # our statement_timeout


class DatabaseUnavailable(RuntimeError):
    """TimescaleDB cannot take anything now; `remaining` (or the whole batch) was not written."""

    def __init__(self, message: str, status: str = "unavailable") -> None:
        super().__init__(message)
        self.status = status
        self.remaining: Batch | None = None  # set when part of a batch was committed before
        self.refused: list[Refused] = []  # rows isolated before the database stopped answering


@dataclass
class WriteResult:
    inserted: int = 0  # liquidations really inserted (re-deliveries are not)
    refused: list[Refused] = field(default_factory=list)
    writes: int = 1  # transactions it took (1 unless rows had to be isolated)


class _BatchRefused(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.reason = (str(exc).strip() or type(exc).__name__)[:2000]
        self.sqlstate: str | None = getattr(exc, "sqlstate", None)


def outage_status(exc: BaseException) -> str | None:
    """'timeout' or 'unavailable' when `exc` means the database takes nothing now; None when the
    batch is at fault. When in doubt, the batch: a real outage shows again on the next write,
    while an outage that is really a bad row would block every write after it."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, PoolTimeout):
        return "unavailable"
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.errors.PipelineAborted):
        return None
    code = exc.sqlstate
    if code:
        if code == _QUERY_CANCELED:
            return "timeout"
        return "unavailable" if code[:2] in _OUTAGE_CLASSES or code in _OUTAGE_CODES else None
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "timeout" if "timeout" in str(exc).lower() else "unavailable"
    return None  # client side, before the server saw anything: a NUL in a text, an encoding error


def server_options(database_url: str, **settings: int) -> str:
    """A connection's `options`: the URL's own, then `-c name=value` for each server setting."""
    own = str(conninfo_to_dict(database_url).get("options") or "")
    return " ".join([own, *(f"-c {name}={value}" for name, value in settings.items())]).strip()


def one_line(text: str) -> str:
    """A message on one line with control characters escaped (it may quote venue text)."""
    text = " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class TimescaleWriter:
    """Owns the connection pool; `write()` is the only hot-path entry point."""

    def __init__(
        self,
        database_url: str,
        reader_password: str = "",
        *,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
        batch_timeout: float = 60.0,
    ) -> None:
        self._url = database_url
        self._reader_password = reader_password
        self._connect_timeout = connect_timeout
        self._batch_timeout = batch_timeout
        self._conn_kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout)),
            "options": server_options(database_url, statement_timeout=round(statement_timeout * 1000)),
        }
        self._pool: AsyncConnectionPool | None = None
        self.migrated = False
        self._migration: concurrent.futures.Future[list[str]] | None = None
        self._down = False
        self._next_probe = 0.0
        self._probe: asyncio.Task[bool] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()  # operations past their deadline, cancelled
        self._closing: set[asyncio.Future[Any]] = set()  # pools being closed in the background
        self.status = "ok"  # "ok" | "unavailable" | "timeout": the last known state
        self.error = ""
        self.batches = 0
        self.rows_inserted = 0

    # --- connections ---------------------------------------------------------------------
    def _new_pool(self) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=4,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs=self._conn_kwargs,
            reconnect_timeout=365 * 86400,  # never give up: the database may be down for a long time
            name="liq-writer",
        )

    async def open(self, wait: float | None = None) -> None:
        """Open the pool; a database that does not answer yet is not an error (probes follow)."""
        pool = self._new_pool()
        self._pool = pool
        await pool.open(wait=False)
        try:
            await pool.wait(timeout=self._connect_timeout if wait is None else wait)
            self._down = False
        except PoolTimeout:
            self._pool = None
            self._keep(self._closing, asyncio.ensure_future(pool.close(timeout=1.0)))
            self._mark_down("no connection within the connect timeout", "unavailable")

    async def close(self) -> None:
        stoppable = [*self._abandoned, *([self._probe] if self._probe else [])]
        for task in stoppable:
            task.cancel()  # a second cancel makes psycopg close a stuck connection at once
        if stoppable or self._closing:
            await asyncio.wait([*stoppable, *self._closing], timeout=2.0)
        self._probe = None
        if self._pool is not None:
            await self._pool.close(timeout=2.0)
            self._pool = None

    async def available(self) -> bool:
        """False while the database is known down. Probes it in the background (at most once a
        second, never blocking the caller); once a probe connects, a fresh pool takes over."""
        if not self._down:
            return True
        if self._probe is None and time.monotonic() >= self._next_probe:
            self._probe = asyncio.create_task(self._probe_once(), name="timescale-probe")
        if self._probe is None or not self._probe.done():
            return False
        task, self._probe = self._probe, None
        self._next_probe = time.monotonic() + _PROBE_INTERVAL_S
        if task.cancelled() or task.exception() is not None:
            return False
        return not self._down

    async def _probe_once(self) -> bool:
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._url, autocommit=True, **self._conn_kwargs),
                timeout=self._connect_timeout + 1.0,
            )
            await conn.close()
        except (TimeoutError, psycopg.Error) as exc:
            self._mark_down(
                one_line(str(exc)) or "no answer within the connect timeout", outage_status(exc) or "unavailable"
            )
            return False
        pool = self._new_pool()
        await pool.open(wait=False)
        try:
            await pool.wait(timeout=self._connect_timeout)
        except PoolTimeout:
            self._keep(self._closing, asyncio.ensure_future(pool.close(timeout=1.0)))
            return False
        self._pool = pool
        self._down = False
        self.status, self.error = "ok", ""
        log.info("TimescaleDB answers again")
        return True

    def _mark_down(self, error: str, status: str) -> None:
        if not self._down or status != self.status:
            what = "does not answer in time" if status == "timeout" else "unavailable"
            log.warning("TimescaleDB %s (%s): batches go to the spool until it answers", what, error)
        self._down = True
        self._next_probe = time.monotonic() + _PROBE_INTERVAL_S
        self.status, self.error = status, error

    def _unavailable(self, exc: BaseException | str, status: str = "unavailable") -> DatabaseUnavailable:
        text = one_line(str(exc)) or type(exc).__name__
        self._mark_down(text, status)
        self._discard_pool()  # the probe opens a fresh one once the server answers
        return DatabaseUnavailable(text, status)

    def _discard_pool(self) -> None:
        """Connections may be broken or stuck behind a server that stopped answering: start over later."""
        pool, self._pool = self._pool, None
        if pool is not None:
            self._keep(self._closing, asyncio.ensure_future(pool.close(timeout=1.0)))

    @staticmethod
    def _keep(tasks: set[asyncio.Future[Any]], task: asyncio.Future[Any]) -> None:
        tasks.add(task)
        task.add_done_callback(_forget(tasks))

    def _connection(self) -> Any:
        if self._pool is None or self._down:
            raise DatabaseUnavailable(self.error or "pool not open", self.status if self._down else "unavailable")
        return self._pool.connection(timeout=self._connect_timeout)

    async def _bounded(self, op: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        """Run `op` under the batch deadline. Past it, the operation is cancelled and abandoned
        (psycopg then cancels the query and closes the connection on its own), the pool is replaced
        and the database counts as timed out."""
        task = asyncio.create_task(op())
        try:
            await asyncio.wait({task}, timeout=self._batch_timeout)
        except asyncio.CancelledError:
            task.cancel()
            self._keep(self._abandoned, task)  # close() cancels it again: psycopg then drops the connection
            raise
        if task.done():
            return task.result()
        task.cancel()
        self._keep(self._abandoned, task)
        raise self._unavailable(f"no answer within {self._batch_timeout:g} s ({what})", "timeout")

    # --- schema ----------------------------------------------------------------------------
    async def ensure_schema(self) -> None:
        """Apply pending migrations once (the runner holds an advisory lock), in a thread awaited
        under the batch deadline; a run still going is awaited again, never started twice."""
        if self.migrated:
            return
        if self._down:
            raise DatabaseUnavailable(self.error or "unavailable", self.status)
        if self._migration is None:
            self._migration = _start_migration(
                make_conninfo(self._url, connect_timeout=self._conn_kwargs["connect_timeout"]),
                self._reader_password,
            )
        try:
            applied = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(self._migration)), timeout=self._batch_timeout
            )
        except TimeoutError:
            raise self._unavailable(f"migrations did not finish within {self._batch_timeout:g} s", "timeout") from None
        except Exception as exc:
            self._migration = None
            status = outage_status(exc)
            if status is None:
                raise  # an edited migration or a broken file: fatal
            raise self._unavailable(exc, status) from exc
        self._migration = None
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))
        self.migrated = True

    # --- batches ---------------------------------------------------------------------------
    async def write(self, batch: Batch) -> WriteResult:
        """Write one batch in one transaction; rows PostgreSQL refuses are isolated (see module)."""
        try:
            inserted = await self._write_once(batch)
        except _BatchRefused as exc:
            return await self._isolate(batch, exc)
        return WriteResult(inserted)

    async def _isolate(self, batch: Batch, first: _BatchRefused) -> WriteResult:
        log.warning(
            "TimescaleDB refused a batch of %d rows for its data (%s: %s): isolating the rows at fault",
            len(batch),
            first.sqlstate or "client",
            one_line(first.reason),
        )
        result = WriteResult(writes=1)
        todo: list[Batch] = []  # a stack: the last piece is written next, so the order is kept
        if len(batch) == 1:
            result.refused.append(Refused(batch, first.reason, first.sqlstate))
        else:
            left, right = batch.split()
            todo += [right, left]
        while todo:
            piece = todo.pop()
            try:
                result.writes += 1
                result.inserted += await self._write_once(piece)
            except _BatchRefused as exc:
                if len(piece) == 1:
                    result.refused.append(Refused(piece, exc.reason, exc.sqlstate))
                else:
                    left, right = piece.split()
                    todo += [right, left]
            except DatabaseUnavailable as exc:
                remaining = Batch()
                for rest in [piece, *reversed(todo)]:
                    remaining.extend(rest)
                exc.remaining = remaining
                exc.refused = result.refused
                raise
        return result

    async def _write_once(self, batch: Batch) -> int:
        try:
            inserted = await self._bounded(lambda: self._transaction(batch), f"a batch of {len(batch)} rows")
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            status = outage_status(exc)
            if status is not None:
                raise self._unavailable(exc, status) from exc
            raise _BatchRefused(exc) from exc
        self.batches += 1
        self.rows_inserted += inserted
        return inserted

    async def _transaction(self, batch: Batch) -> int:
        liqs = q.unique_liquidations(batch.liquidations)
        candles = q.last_candles(batch.candles)
        cascades = list({c.id: c for c in batch.cascades}.values())
        coverage = q.merge_statuses(batch.statuses)
        inserted = 0
        async with self._connection() as conn, conn.transaction(), conn.pipeline():
            cur = conn.cursor()
            liq_curs = []
            if liqs:
                await cur.execute(q.LOCK_FOLD)
            for start in range(0, len(liqs), q.STATEMENT_ROWS):
                await asyncio.sleep(0)  # let the router run between chunks of CPU work
                liq_cur = conn.cursor()
                await liq_cur.execute(
                    q.INSERT_LIQUIDATIONS, q.liquidation_arrays(liqs[start : start + q.STATEMENT_ROWS])
                )
                liq_curs.append(liq_cur)
            if batch.flags:
                await cur.execute(q.FLAG_MEMBERS, q.flag_arrays(batch.flags))
            if candles:
                await cur.execute(q.UPSERT_CANDLES, q.candle_arrays(candles))
                await cur.execute(q.UPSERT_CANDLES_1H, q.candle_hours(candles))
            if cascades:
                await cur.execute(q.UPSERT_CASCADES, q.cascade_arrays(cascades))
            if coverage:
                await cur.executemany(q.UPSERT_COVERAGE, coverage)
            for liq_cur in liq_curs:
                row = await liq_cur.fetchone()
                inserted += int(row[0]) if row else 0
        return inserted

    async def _run(self, op: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        """A non-batch operation: outages become DatabaseUnavailable, anything else is a bug."""
        try:
            return await self._bounded(op, what)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            status = outage_status(exc)
            if status is None:
                raise
            raise self._unavailable(exc, status) from exc

    async def close_stale(
        self,
        own_connections: Iterable[str],
        own_cascades: Iterable[int],
        before_ms: int | None = None,
        stale_ms: int = STALE_COVERAGE_MS,
    ) -> tuple[int, int]:
        """Close what a killed process left open: coverage rows not refreshed for `stale_ms` (a live
        collector refreshes its own every few seconds) end at their last heartbeat or at the last
        event stored after it (received before `before_ms`, this process's start), and active
        cascades other than `own_cascades` end where they are (the leader calls this: the others
        write no cascades). Returns (coverage rows, cascades) closed."""
        own = list(own_connections)
        cascades = list(own_cascades)
        now = int(time.time() * 1000)
        before = ms_to_datetime(now if before_ms is None else before_ms)
        stale = ms_to_datetime(now - stale_ms)

        async def op() -> tuple[int, int]:
            async with self._connection() as conn, conn.transaction():
                cur = await conn.execute(q.CLOSE_STALE, {"own": own, "before": before, "stale": stale})
                closed = cur.rowcount
                cur = await conn.execute(q.END_STALE_CASCADES, (cascades,))
                return closed, cur.rowcount

        return await self._run(op, "closing stale coverage")

    async def minute_usd(self, since_ms: int, until_ms: int, sources: list[str]) -> list[tuple[str, str, int, Decimal]]:
        """(exchange, symbol, minute start ms, USD of both sides) from the 1-minute rollups in
        [since, until), for the given sources: what the cascade baselines learn from at start."""
        since, until = ms_to_datetime(since_ms), ms_to_datetime(until_ms)

        async def op() -> list[tuple[str, str, int, Decimal]]:
            async with self._connection() as conn:
                cur = await conn.execute(q.MINUTE_USD, (since, until, sources))
                return [(r[0], r[1], int(r[2]), r[3]) for r in await cur.fetchall()]

        return await self._run(op, "reading the cascade baselines")

    async def active_cascades(self) -> list[tuple[Cascade, list[Liquidation]]]:
        """Cascades still marked active, each with the liquidations stored under its id: what a new
        leader carries on (CascadeDetector.adopt; the leader's stale close ends forgotten ones)."""

        async def op() -> list[tuple[Cascade, list[Liquidation]]]:
            async with self._connection() as conn:
                cur = await conn.execute(q.ACTIVE_CASCADES)
                cascades = [q.cascade_from_row(r) for r in await cur.fetchall()]
                if not cascades:
                    return []
                first = ms_to_datetime(min(c.start_ms for c in cascades) - q.CASCADE_LATE_MS)
                cur = await conn.execute(q.CASCADE_MEMBERS, ([c.id for c in cascades], first))
                members: dict[int, list[Liquidation]] = {}
                for r in await cur.fetchall():
                    members.setdefault(int(r[11]), []).append(q.liquidation_from_row(r))
                return [(c, members.get(c.id, [])) for c in cascades]

        return await self._run(op, "reading the active cascades")

    async def fetch_window(self, since_ms: int) -> tuple[list[Liquidation], list[Cascade]]:
        """Liquidations since `since_ms` and cascades active or ended since then (Redis rebuild)."""
        since = ms_to_datetime(since_ms)

        async def op() -> tuple[list[Liquidation], list[Cascade]]:
            async with self._connection() as conn:
                cur = await conn.execute(
                    """SELECT time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at,
                              source, sampled, cascade_id, event_key
                       FROM liquidations WHERE time >= %s""",
                    (since,),
                )
                liqs = [q.liquidation_from_row(r) for r in await cur.fetchall()]
                cur = await conn.execute(
                    """SELECT id, symbol, side, start_time, end_time, events, quantity, value_usd,
                              events_by_exchange, peak_minute, price_start, price_end, risk_score, active, source,
                              usd_by_exchange
                       FROM cascades WHERE active OR end_time >= %s""",
                    (since,),
                )
                return liqs, [q.cascade_from_row(r) for r in await cur.fetchall()]

        return await self._run(op, "reading the live window")


def _start_migration(conninfo: str, reader_password: str) -> concurrent.futures.Future[list[str]]:
    """`migrate()` in a daemon thread: a server that never answers cannot hold up the process."""
    future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            future.set_result(migrate(conninfo, reader_password))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="migrations", daemon=True).start()
    return future


def _forget(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned operation's error was already reported

    return done
