"""The catalog of venue symbols the app can pick from: every instrument the venues list (the
`instruments` table, delisted ones too, so their history still resolves to a coin) and every
(exchange, symbol) the hourly rollup (and the minutes past the fold's line) holds in the
RECENT_DAYS up to its newest hour (replayed or unlisted symbols), each with its coin. A symbol the
table does not list gets its coin from `common.instruments.guess_instrument`.

Only recent rollup hours are read: the rollup has no index on (exchange, symbol), and a DISTINCT
over a year of the whole market would cost the sidebar seconds on every cache expiry. An old
unlisted symbol is still reachable by link (`?symbol=NAME`, every venue).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all
from app.data.rows import fold_line, ts
from app.query import Catalog, catalog_of

_LISTED = "SELECT exchange, symbol, base FROM instruments"
# The newest hour, of the folded hours or of the minutes past the fold's line (each max one index
# probe: the line is a constant, so only the minute chunks after it are planned), and the symbols
# stored since a week before it.
_NEWEST = """
SELECT greatest((SELECT max(bucket) FROM liquidations_1h),
                (SELECT time_bucket('1 hour', max(bucket)) FROM liquidations_1m WHERE bucket >= %(line)s))
"""
_STORED = """
SELECT exchange, symbol FROM liquidations_1h WHERE bucket >= %(since)s
UNION SELECT exchange, symbol FROM liquidations_1m WHERE bucket >= greatest(%(since)s, %(line)s)
"""
RECENT_DAYS = 7


def load_catalog(pool: ConnectionPool | None, configured: Sequence[tuple[str, str]] = ()) -> Catalog:
    """The catalog from the database plus `configured` (exchange, symbol) pairs (LIQ_SYMBOLS), which
    are offered even while the database is down (`pool=None`)."""
    rows: list[tuple[str, str, str | None]] = [(e, s, None) for e, s in configured]
    if pool is not None:
        rows = [(e, s, b) for e, s, b in fetch_all(pool, _LISTED)] + rows
        line = ts(fold_line(pool))
        ((newest,),) = fetch_all(pool, _NEWEST, {"line": line})
        if newest is not None:
            since = newest - timedelta(days=RECENT_DAYS)
            rows += [(e, s, None) for e, s in fetch_all(pool, _STORED, {"since": since, "line": line})]
    return catalog_of(rows)
