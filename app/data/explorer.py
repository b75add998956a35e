"""Queries behind the explorer page (and `app.cli export`): raw liquidations a filter selects,
page by page (keyset pagination), their count and USD, and the query that streams all of them.

Plain functions take a psycopg `ConnectionPool` and an `ExplorerFilter`; amounts stay exact
`Decimal`s. Errors reaching the database surface as `connections.DataUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all, fetch_df, get_pool
from app.data.scope import CACHE_TTL_S, HOUR_MS, Scope, bucketed_rows, floor_ms, scope_filters, utc_datetime

EXPLORER_PAGE_ROWS = 100
RAW_COUNT_MAX_DAYS = 31


@dataclass(frozen=True)
class ExplorerFilter:
    scope: Scope
    side: str | None = None
    min_usd: Decimal = Decimal(0)
    cascade_only: bool = False

    def describe(self) -> str:
        extra = [f"side {self.side or 'ALL'}", f"minimum {self.min_usd:f} USD"]
        if self.cascade_only:
            extra.append("cascade members only")
        return self.scope.describe() + "; " + "; ".join(extra)


EXPLORER_COLUMNS = "time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source, sampled, cascade_id, event_key"


def _explorer_where(f: ExplorerFilter) -> tuple[sql.Composed, list[Any]]:
    where, params = scope_filters(f.scope, "time", f.scope.start, f.scope.end, f.side)
    parts: list[sql.Composable] = [where]
    if f.min_usd > 0:
        parts.append(sql.SQL("value_usd >= %s"))
        params.append(f.min_usd)
    if f.cascade_only:
        parts.append(sql.SQL("cascade_id IS NOT NULL"))
    return sql.SQL(" AND ").join(parts), params


def explorer_page(
    pool: ConnectionPool, f: ExplorerFilter, after: tuple[datetime, int] | None = None, limit: int = EXPLORER_PAGE_ROWS
) -> pd.DataFrame:
    """One page of raw liquidations, newest first. `after` is the (time, event_key) of the last
    row of the previous page: keyset pagination, so page 1000 costs what page 1 costs."""
    where, params = _explorer_where(f)
    if after is not None:
        where = sql.SQL("{} AND (time, event_key) < (%s, %s)").format(where)
        params.extend(after)
    lower = _page_lower_bound(pool, f, after[0] if after else f.scope.end, limit)
    if lower is not None:
        where = sql.SQL("{} AND time >= %s").format(where)
        params.append(lower)
    query = sql.SQL("SELECT {} FROM liquidations WHERE {} ORDER BY time DESC, event_key DESC LIMIT %s").format(
        sql.SQL(EXPLORER_COLUMNS), where
    )
    return fetch_df(pool, query, [*params, limit])


def _page_lower_bound(pool: ConnectionPool, f: ExplorerFilter, upper: datetime, limit: int) -> datetime | None:
    """The start of the newest hour from which up to `upper` at least `limit` rows exist, per the
    hourly rollup. With it the page query opens a chunk or two instead of every day of the range
    (planning over a year of daily chunks alone costs ~200 ms). Only without row-level filters,
    which the rollup cannot count; None means "no bound"."""
    if f.min_usd > 0 or f.cascade_only:
        return None
    lo = utc_datetime(floor_ms(f.scope.start_ms, HOUR_MS))
    # Whole hours below `upper` only: the hour holding `upper` also counts rows at or after it.
    top = utc_datetime(floor_ms(int(upper.timestamp() * 1000), HOUR_MS))
    where, params = scope_filters(f.scope, "bucket", lo, top, f.side)
    query = sql.SQL(
        "SELECT bucket FROM (SELECT bucket, sum(sum(events)) OVER (ORDER BY bucket DESC) AS seen "
        "FROM liquidations_1h WHERE {} GROUP BY bucket) AS h WHERE seen >= %s ORDER BY bucket DESC LIMIT 1"
    ).format(where)
    rows = fetch_all(pool, query, [*params, limit])
    return rows[0][0] if rows else None


def explorer_count(pool: ConnectionPool, f: ExplorerFilter) -> tuple[int, Decimal] | None:
    """How many rows the filter selects and their USD, or None when that would be slow.

    Without row-level filters it is read from the rollups (fast over years). With a minimum USD
    or "cascade only" it needs the raw rows: counted for ranges up to RAW_COUNT_MAX_DAYS, not
    beyond (a year of raw rows takes seconds to scan; the page says so and still pages through)."""
    if f.min_usd <= 0 and not f.cascade_only:
        inner, params = bucketed_rows(f.scope, f.side)
        query = sql.SQL("SELECT coalesce(sum(events), 0)::bigint, coalesce(sum(value_usd), 0) FROM ({}) AS b").format(
            inner
        )
    elif f.scope.days <= RAW_COUNT_MAX_DAYS:
        where, params = _explorer_where(f)
        query = sql.SQL("SELECT count(*), coalesce(sum(value_usd), 0) FROM liquidations WHERE {}").format(where)
    else:
        return None
    (count, usd), *_ = fetch_all(pool, query, params)  # an aggregate always returns one row
    return int(count), Decimal(usd)


def explorer_export_query(f: ExplorerFilter) -> tuple[sql.Composed, list[Any]]:
    """The query of everything the filter selects, oldest first, for streaming exports."""
    where, params = _explorer_where(f)
    query = sql.SQL("SELECT {} FROM liquidations WHERE {} ORDER BY time, event_key").format(
        sql.SQL(EXPLORER_COLUMNS), where
    )
    return query, params


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def cached_explorer_page(
    database_url: str, f: ExplorerFilter, after: tuple[datetime, int] | None, limit: int
) -> pd.DataFrame:
    return explorer_page(get_pool(database_url), f, after, limit)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def cached_explorer_count(database_url: str, f: ExplorerFilter) -> tuple[int, Decimal] | None:
    return explorer_count(get_pool(database_url), f)
