"""The catalog of venue symbols the app can pick from: every instrument the venues list (the
`instruments` table, delisted ones too, so their history still resolves to a coin) and every
(exchange, symbol) the hourly rollup (its view, open hours included) holds in the RECENT_DAYS up
to its newest hour (replayed or unlisted symbols), each with its coin. A symbol the table does not
list gets its coin from `common.instruments.guess_instrument`.

Only recent rollup hours are read: the rollup has no index on (exchange, symbol), and a DISTINCT
over a year of the whole market would cost the sidebar seconds on every cache expiry. An old
unlisted symbol is still reachable by link (`?symbol=NAME`, every venue).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all
from app.query import Catalog, catalog_of

_LISTED = "SELECT exchange, symbol, base FROM instruments"
# The newest hour: of the folded hours, or of the minutes past the fold's line (each max is one
# index probe; a max over the view would aggregate all of it).
_NEWEST = """
SELECT greatest(
    (SELECT max(bucket) FROM liquidations_1h WHERE bucket < (SELECT folded_through FROM rollup_fold)),
    (SELECT time_bucket('1 hour', max(bucket)) FROM liquidations_1m
     WHERE bucket >= (SELECT folded_through FROM rollup_fold)))
"""
_STORED = "SELECT DISTINCT exchange, symbol FROM liquidations_1h_all WHERE bucket >= %s"
RECENT_DAYS = 7


def load_catalog(pool: ConnectionPool | None, configured: Sequence[tuple[str, str]] = ()) -> Catalog:
    """The catalog from the database plus `configured` (exchange, symbol) pairs (LIQ_SYMBOLS), which
    are offered even while the database is down (`pool=None`)."""
    rows: list[tuple[str, str, str | None]] = [(e, s, None) for e, s in configured]
    if pool is not None:
        rows = [(e, s, b) for e, s, b in fetch_all(pool, _LISTED)] + rows
        ((newest,),) = fetch_all(pool, _NEWEST)
        if newest is not None:
            rows += [(e, s, None) for e, s in fetch_all(pool, _STORED, [newest - timedelta(days=RECENT_DAYS)])]
    return catalog_of(rows)
