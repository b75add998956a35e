"""The database's housekeeping, on the leading collector only.

- The fold: each closed hour of the liquidation rollups is folded from the minutes into the hours,
  the market's hours and its day (db/rollups.py `FOLD`, db/migrations/0018), once it has been
  closed for `FOLD_DELAY_S` (so a venue a little behind still lands before it); checked every
  `FOLD_CHECK_S`, one transaction an hour, catching up after a stop.
- Retention: drop whole chunks past their age (raw and candles after `retention_raw_days`, the
  rollups and hourly candles after `retention_rollup_days`), at start and then every hour.

A database that does not answer (within the connect timeout and the batch deadline) is skipped
until the next round; a fold left half done is a rolled-back transaction, done again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from collector.storage.timescale import server_options
from common.config import Settings
from db import rollups

log = logging.getLogger("collector.maintenance")

INTERVAL_S = 3600.0
FOLD_CHECK_S = 30.0
FOLD_DELAY_S = 120.0
# A fold holds the line that every writer's transaction waits for: if its connection falls silent
# mid-transaction (a host gone without closing its socket), the server ends the session after this
# long, so writers are held back seconds, not until TCP gives up.
FOLD_IDLE_S = 5.0
_HOUR = timedelta(hours=1)

_DROP = "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => now() - make_interval(days => %s))"


def retention_plan(settings: Settings) -> list[tuple[str, int]]:
    """(hypertable, days to keep) for every table with a retention."""
    return [
        ("liquidations", settings.retention_raw_days),
        ("candles", settings.retention_raw_days),
        ("liquidations_1m", settings.retention_rollup_days),
        ("liquidations_1h", settings.retention_rollup_days),
        ("liquidations_1d", settings.retention_rollup_days),
        ("liquidations_market_1h", settings.retention_rollup_days),
        ("candles_1h", settings.retention_rollup_days),
    ]


async def apply_retention(
    database_url: str, plan: list[tuple[str, int]], *, connect_timeout: float = 5.0
) -> dict[str, int]:
    """Drop chunks older than each table's retention; return the chunks dropped per table."""
    dropped: dict[str, int] = {}
    connect = psycopg.AsyncConnection.connect(
        database_url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
    )
    async with await connect as conn:
        for table, days in plan:
            cur = await conn.execute(_DROP, (table, days))
            row = await cur.fetchone()
            dropped[table] = int(row[0]) if row else 0
    if any(dropped.values()):
        log.info("retention: dropped chunks %s", dropped)
    return dropped


@dataclass
class FoldState:
    """What the leader last read of the fold's line, for the metrics (None: not read yet, or not
    the leader)."""

    line: datetime | None = None

    def behind_s(self, now: float) -> float | None:
        """How long the oldest closed hour not folded yet has been due (0 while the fold keeps up)."""
        if self.line is None:
            return None
        return max(0.0, now - (self.line + _HOUR).timestamp() - FOLD_DELAY_S)


def fold_options(database_url: str, statement_timeout_s: float) -> str:
    """The server options of a fold's connection: the URL's own, a statement timeout, and the
    silence after which the server ends a transaction the fold left open (FOLD_IDLE_S)."""
    return server_options(
        database_url,
        statement_timeout=round(statement_timeout_s * 1000),
        idle_in_transaction_session_timeout=round(FOLD_IDLE_S * 1000),
    )


async def fold_closed_hours(
    database_url: str,
    *,
    now: float | None = None,
    delay_s: float = FOLD_DELAY_S,
    connect_timeout: float = 5.0,
    statement_timeout: float = 30.0,
    state: FoldState | None = None,
) -> int:
    """Fold every hour closed for `delay_s` at `now` (epoch s; default: the clock), oldest first, one
    transaction each; return how many were folded. Another collector folding at once is harmless:
    the hour it folded first is skipped here. `state` learns the line as it moves."""
    deadline = datetime.fromtimestamp((time.time() if now is None else now) - delay_s, tz=UTC)
    folded = 0
    connect = psycopg.AsyncConnection.connect(
        database_url,
        connect_timeout=max(1, round(connect_timeout)),
        options=fold_options(database_url, statement_timeout),
    )
    async with await connect as conn:
        while True:
            async with conn.transaction():
                row = await (await conn.execute(rollups.FOLDED_THROUGH)).fetchone()
            if row is None:  # someone deleted it: nothing can be folded until it is back
                log.error("fold: rollup_fold has no row (db/migrations/0018 makes it); nothing folded")
                return folded
            hour = row[0].astimezone(UTC)
            if state is not None:
                state.line = hour
            if hour + _HOUR > deadline:
                if folded:
                    log.info("fold: %d closed hours folded, the line is at %s", folded, f"{hour:%Y%m%d %H:%M:%S} UTC")
                return folded
            params = {"hour": hour, "next": hour + _HOUR, "day": hour.replace(hour=0)}
            async with conn.transaction():
                moved = await conn.execute(rollups.FOLD_MOVE, params)
                if moved.rowcount == 1:
                    for statement in rollups.FOLD:
                        await conn.execute(statement, params)
                    folded += 1
            await asyncio.sleep(0)


async def run_maintenance(
    settings: Settings,
    stop: asyncio.Event,
    interval_s: float = INTERVAL_S,
    is_leader: Callable[[], bool] = lambda: True,
    fold_check_s: float = FOLD_CHECK_S,
    fold: FoldState | None = None,
) -> None:
    """Fold closed hours every `fold_check_s` and apply retention now and every `interval_s` until
    `stop` is set, on the leading collector only (collector/leader.py: several collectors may share
    one database)."""
    plan = retention_plan(settings)
    retention_due = 0.0
    while not stop.is_set():
        if not is_leader():
            if fold is not None:
                fold.line = None  # the leader's figure, not this collector's
        else:
            await _round(
                "fold",
                settings,
                fold_closed_hours(
                    settings.database_url,
                    connect_timeout=settings.db_connect_timeout_s,
                    statement_timeout=settings.db_statement_timeout_s,
                    state=fold,
                ),
            )
            if time.monotonic() >= retention_due:
                retention_due = time.monotonic() + interval_s
                await _round(
                    "retention",
                    settings,
                    apply_retention(settings.database_url, plan, connect_timeout=settings.db_connect_timeout_s),
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(interval_s, fold_check_s) if is_leader() else 5.0)


async def _round(what: str, settings: Settings, work: Coroutine[Any, Any, object]) -> None:
    """One round of `what` under the batch deadline; an outage skips it until the next round."""
    try:
        async with asyncio.timeout(settings.db_batch_timeout_s):
            await work
    except psycopg.Error as exc:
        log.warning("%s skipped this round: %s", what, " ".join(str(exc).split()))
    except TimeoutError:
        log.warning("%s skipped this round: no answer within %g s", what, settings.db_batch_timeout_s)
