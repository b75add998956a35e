"""The liquidation rollups computed in bulk from the raw rows.

The collector's writer keeps them up to date row by row (collector/storage/timescale_sql.py); this
is the same aggregate for a whole range at once, for the dataset generators (bench/) and the
tests' seeding, so every copy of the data agrees with what the writer makes. The market rollup is
built from `liquidations_1h`, which equals the raw rows, so it comes after it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg import sql

SYMBOL_ROLLUPS = (("liquidations_1m", "1 minute"), ("liquidations_1h", "1 hour"), ("liquidations_1d", "1 day"))
MARKET_ROLLUP = "liquidations_market_1h"
TABLES = (*(table for table, _width in SYMBOL_ROLLUPS), MARKET_ROLLUP)
_WIDTH_S = {"1 minute": 60, "1 hour": 3600, "1 day": 86_400}

_SYMBOL = """
    INSERT INTO {table} (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
    SELECT time_bucket({width}, time), exchange, symbol, side, source,
           count(*), sum(quantity), sum(value_usd), max(value_usd)
    FROM liquidations
    WHERE time >= %s AND time < %s
    GROUP BY 1, 2, 3, 4, 5
"""
_MARKET = """
    INSERT INTO liquidations_market_1h (bucket, exchange, side, source, events, value_usd, max_value_usd)
    SELECT bucket, exchange, side, source, sum(events), sum(value_usd), max(max_value_usd)
    FROM liquidations_1h
    WHERE bucket >= %s AND bucket < %s
    GROUP BY 1, 2, 3, 4
"""


def widened(width: str, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to whole buckets of `width` (UTC), so no bucket is rebuilt in part."""
    step = _WIDTH_S[width]
    lo, hi = int(start.timestamp()) // step * step, -(-int(end.timestamp()) // step) * step
    return datetime.fromtimestamp(lo, tz=UTC), datetime.fromtimestamp(hi, tz=UTC)


def symbol_rollup(table: str, width: str) -> sql.Composed:
    """The INSERT of `table`'s buckets in [%s, %s) (bounds aligned to `width`) from the raw rows."""
    return sql.SQL(_SYMBOL).format(table=sql.Identifier(table), width=sql.Literal(width))


def market_rollup() -> sql.Composed:
    """The INSERT of the whole market's hours in [%s, %s) (hour-aligned) from `liquidations_1h`."""
    return sql.SQL(_MARKET).format()


def replace(conn: psycopg.Connection, table: str, insert: sql.Composed, start: datetime, end: datetime) -> None:
    """Delete `table`'s buckets in [start, end), then insert them anew."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE bucket >= %s AND bucket < %s").format(sql.Identifier(table)), (start, end)
    )
    conn.execute(insert, (start, end))


def rebuild(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Every liquidation rollup's buckets over [start, end) (widened to whole buckets) anew from the raw rows."""
    for table, width in SYMBOL_ROLLUPS:
        replace(conn, table, symbol_rollup(table, width), *widened(width, start, end))
    replace(conn, MARKET_ROLLUP, market_rollup(), *widened("1 hour", start, end))
