"""The liquidation rollups computed in bulk, and the fold of closed hours.

The collector's writer keeps them up to date batch by batch (collector/storage/timescale_sql.py):
the minutes always, the hours and days only before `rollup_fold.folded_through` (W). `FOLD` folds
the hour at W from the minutes once it has closed and moves W on (db/migrations/0018). Readers
take the hours from W on from the minutes: the app splits its ranges at W (app/data/rows.py), the
`_all` views do it for psql.

`rebuild` is the same aggregate for a whole range at once, for the dataset generators (bench/) and
the tests' seeding, so every copy of the data agrees with what the writer makes: the hours and
days from the raw rows before W only. The market rollup is built from `liquidations_1h`, so it
comes after it.
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
    WHERE time >= %s AND time < %s {folded}
    GROUP BY 1, 2, 3, 4, 5
"""
_MARKET = """
    INSERT INTO liquidations_market_1h (bucket, exchange, side, source, events, value_usd, max_value_usd)
    SELECT bucket, exchange, side, source, sum(events), sum(value_usd), max(max_value_usd)
    FROM liquidations_1h
    WHERE bucket >= %s AND bucket < %s
    GROUP BY 1, 2, 3, 4
"""
_BEFORE_FOLD = "AND time < (SELECT folded_through FROM rollup_fold)"

# The fold of one closed hour [%(hour)s, %(next)s): the line moves first (it waits for every
# writer holding it FOR SHARE, and holds the next ones off until the commit), so each statement
# after it sees every minute written before the hour was folded; a writer after the commit
# upserts its rows of the folded hour into the hours and days itself. The hour's folded rows (left
# by a rebuild, if any) are replaced, the whole market's hour comes from the folded hour, and the
# day from its hours before the new line.
FOLD_MOVE = "UPDATE rollup_fold SET folded_through = %(next)s WHERE folded_through = %(hour)s"
FOLD = (
    "DELETE FROM liquidations_1h WHERE bucket >= %(hour)s AND bucket < %(next)s",
    """INSERT INTO liquidations_1h (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
       SELECT %(hour)s, exchange, symbol, side, source, sum(events), sum(quantity), sum(value_usd), max(max_value_usd)
       FROM liquidations_1m WHERE bucket >= %(hour)s AND bucket < %(next)s
       GROUP BY exchange, symbol, side, source""",
    "DELETE FROM liquidations_market_1h WHERE bucket >= %(hour)s AND bucket < %(next)s",
    """INSERT INTO liquidations_market_1h (bucket, exchange, side, source, events, value_usd, max_value_usd)
       SELECT %(hour)s, exchange, side, source, sum(events), sum(value_usd), max(max_value_usd)
       FROM liquidations_1h WHERE bucket >= %(hour)s AND bucket < %(next)s
       GROUP BY exchange, side, source""",
    "DELETE FROM liquidations_1d WHERE bucket = %(day)s",
    """INSERT INTO liquidations_1d (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
       SELECT %(day)s, exchange, symbol, side, source, sum(events), sum(quantity), sum(value_usd), max(max_value_usd)
       FROM liquidations_1h WHERE bucket >= %(day)s AND bucket < %(next)s
       GROUP BY exchange, symbol, side, source""",
)
FOLDED_THROUGH = "SELECT folded_through FROM rollup_fold"


def widened(width: str, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to whole buckets of `width` (UTC), so no bucket is rebuilt in part."""
    step = _WIDTH_S[width]
    lo, hi = int(start.timestamp()) // step * step, -(-int(end.timestamp()) // step) * step
    return datetime.fromtimestamp(lo, tz=UTC), datetime.fromtimestamp(hi, tz=UTC)


def symbol_rollup(table: str, width: str) -> sql.Composed:
    """The INSERT of `table`'s buckets in [%s, %s) (bounds aligned to `width`) from the raw rows
    (for the hours and days, the rows before the fold's line only)."""
    folded = sql.SQL("" if table == SYMBOL_ROLLUPS[0][0] else _BEFORE_FOLD)
    return sql.SQL(_SYMBOL).format(table=sql.Identifier(table), width=sql.Literal(width), folded=folded)


def market_rollup() -> sql.Composed:
    """The INSERT of the whole market's hours in [%s, %s) (hour-aligned) from `liquidations_1h`
    (which holds only the hours before the fold's line)."""
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
