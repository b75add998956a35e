"""Queries behind the explorer page (and `app.cli export`): raw liquidations a filter selects,
page by page (keyset pagination), their count and USD, and the query that streams all of them.

Plain functions take a psycopg `ConnectionPool`, a `Query` (app/query.py: its minimum size
included) and a range, plus "cascade members only"; amounts stay exact `Decimal`s. Errors reaching the database surface as `connections.DataUnavailable`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all, fetch_df
from app.data.rows import HOUR_MS, bucketed_rows, floor_ms, fold_line, hour_rows, to_ms, where
from app.query import Query

EXPLORER_PAGE_ROWS = 100
RAW_COUNT_MAX_DAYS = 31


EXPLORER_COLUMNS = "time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source, sampled, cascade_id, event_key"


def _explorer_where(q: Query, start_ms: int, end_ms: int, cascade_only: bool) -> tuple[sql.Composed, list[Any]]:
    w, params = where(q, "time", start_ms, end_ms, min_usd=True)
    if cascade_only:
        w = sql.SQL("{} AND cascade_id IS NOT NULL").format(w)
    return w, params


def explorer_page(
    pool: ConnectionPool,
    q: Query,
    start_ms: int,
    end_ms: int,
    cascade_only: bool = False,
    after: tuple[datetime, int] | None = None,
    limit: int = EXPLORER_PAGE_ROWS,
) -> pd.DataFrame:
    """One page of raw liquidations, newest first. `after` is the (time, event_key) of the last
    row of the previous page: keyset pagination, so page 1000 costs what page 1 costs."""
    where, params = _explorer_where(q, start_ms, end_ms, cascade_only)
    if after is not None:
        where = sql.SQL("{} AND (time, event_key) < (%s, %s)").format(where)
        params.extend(after)
    upper = to_ms(after[0]) if after else end_ms
    lower = None if q.min_usd > 0 or cascade_only else _page_lower_bound(pool, q, start_ms, upper, limit)
    if lower is not None:
        where = sql.SQL("{} AND time >= %s").format(where)
        params.append(lower)
    query = sql.SQL("SELECT {} FROM liquidations WHERE {} ORDER BY time DESC, event_key DESC LIMIT %s").format(
        sql.SQL(EXPLORER_COLUMNS), where
    )
    return fetch_df(pool, query, [*params, limit])


def _page_lower_bound(pool: ConnectionPool, q: Query, start_ms: int, upper_ms: int, limit: int) -> datetime | None:
    """The start of the newest hour from which up to `upper` at least `limit` rows exist, per the
    hourly rollup. With it the page query opens a chunk or two instead of every day of the range
    (planning over a year of daily chunks alone costs ~200 ms). Only without row-level filters,
    which the rollup cannot count; None means "no bound"."""
    # Whole hours below `upper` only: the hour holding `upper` also counts rows at or after it.
    hours, params = hour_rows(q, floor_ms(start_ms, HOUR_MS), floor_ms(upper_ms, HOUR_MS), line_ms=fold_line(pool))
    query = sql.SQL(
        "SELECT bucket FROM (SELECT bucket, sum(sum(events)) OVER (ORDER BY bucket DESC) AS seen "
        "FROM ({}) AS r GROUP BY bucket) AS h WHERE seen >= %s ORDER BY bucket DESC LIMIT 1"
    ).format(hours)
    rows = fetch_all(pool, query, [*params, limit])
    return rows[0][0] if rows else None


def explorer_count(
    pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, cascade_only: bool = False
) -> tuple[int, Decimal] | None:
    """How many rows the filter selects and their USD, or None when that would be slow.

    Without row-level filters it is read from the rollups (fast over years). With a minimum USD
    or "cascade only" it needs the raw rows: counted for ranges up to RAW_COUNT_MAX_DAYS, not
    beyond (a year of raw rows takes seconds to scan; the page says so and still pages through)."""
    if q.min_usd <= 0 and not cascade_only:
        inner, params = bucketed_rows(q, start_ms, end_ms, line_ms=fold_line(pool))
        query = sql.SQL("SELECT coalesce(sum(events), 0)::bigint, coalesce(sum(value_usd), 0) FROM ({}) AS b").format(
            inner
        )
    elif end_ms - start_ms <= RAW_COUNT_MAX_DAYS * 86_400_000:
        where, params = _explorer_where(q, start_ms, end_ms, cascade_only)
        query = sql.SQL("SELECT count(*), coalesce(sum(value_usd), 0) FROM liquidations WHERE {}").format(where)
    else:
        return None
    (count, usd), *_ = fetch_all(pool, query, params)  # an aggregate always returns one row
    return int(count), Decimal(usd)


def explorer_export_query(
    q: Query, start_ms: int, end_ms: int, cascade_only: bool = False
) -> tuple[sql.Composed, list[Any]]:
    """The query of everything the filter selects, oldest first, for streaming exports."""
    where, params = _explorer_where(q, start_ms, end_ms, cascade_only)
    query = sql.SQL("SELECT {} FROM liquidations WHERE {} ORDER BY time, event_key").format(
        sql.SQL(EXPLORER_COLUMNS), where
    )
    return query, params
