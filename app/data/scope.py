"""What a page reads (`Scope`: range, symbol, exchanges, sources) and how a range is read.

Long ranges are read from the rollups (db/migrations/0003_rollups.sql): `bucketed_rows` cuts a
range into whole hours (liquidations_1h), whole minutes at the edges (liquidations_1m) and
seconds at the very edges (raw rows). The rollups always equal the raw rows, so the union is
exact for any range and its cost follows the number of hours, not the number of events.
Every timestamp comes back as an aware UTC datetime; buckets use time_bucket (UTC), never the
session time zone. Shared by the heatmap, analyses, cascades and explorer data modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import streamlit as st
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all, get_pool
from app.state import ViewState
from common import venues

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
CACHE_TTL_S = 30  # the `cached_*` wrappers of every page's data module

_BUCKET_COLUMNS = "exchange, symbol, side, source, events, quantity, value_usd, max_value_usd"


@dataclass(frozen=True)
class Scope:
    """What to read: [start_ms, end_ms), one symbol or all (None), some exchanges, live or all sources."""

    start_ms: int
    end_ms: int
    symbol: str | None = "BTCUSDT"
    exchanges: tuple[str, ...] = venues.NAMES
    include_nonlive: bool = False

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.end_ms / 1000, tz=UTC)

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / 86_400_000

    def describe(self) -> str:
        """The filter in words, for download headers and captions."""
        symbol = self.symbol or "ALL symbols"
        source = "all sources (includes non-live)" if self.include_nonlive else "live only"
        return (
            f"{symbol}; exchanges {','.join(self.exchanges) or 'none'}; "
            f"{self.start:%Y%m%d %H:%M:%S} .. {self.end:%Y%m%d %H:%M:%S} UTC; {source}"
        )


def scope_filters(
    scope: Scope, time_column: str, lo: datetime, hi: datetime, side: str | None
) -> tuple[sql.Composed, list[Any]]:
    """The WHERE clause (and its parameters) of the scope over `time_column` in [lo, hi), one side or both."""
    parts = [
        sql.SQL("{} >= %s AND {} < %s").format(sql.Identifier(time_column), sql.Identifier(time_column)),
        sql.SQL("exchange = ANY(%s)"),
    ]
    params: list[Any] = [lo, hi, list(scope.exchanges)]
    if scope.symbol is not None:
        parts.append(sql.SQL("symbol = %s"))
        params.append(scope.symbol)
    if not scope.include_nonlive:
        parts.append(sql.SQL("source = 'live'"))
    if side is not None:
        parts.append(sql.SQL("side = %s"))
        params.append(side)
    return sql.SQL(" AND ").join(parts), params


def ceil_ms(ms: int, step: int) -> int:
    """`ms` rounded up to a whole `step`."""
    return -(-ms // step) * step


def floor_ms(ms: int, step: int) -> int:
    """`ms` rounded down to a whole `step`."""
    return ms // step * step


def _segments(start_ms: int, end_ms: int, use_hours: bool = True) -> list[tuple[str, int, int]]:
    """Cut [start, end) into (table, lo, hi) pieces: whole hours, whole minutes, then raw seconds."""
    out: list[tuple[str, int, int]] = []
    if start_ms >= end_ms:
        return out
    minute_spans = [(start_ms, end_ms)]
    h0, h1 = ceil_ms(start_ms, HOUR_MS), floor_ms(end_ms, HOUR_MS)
    if use_hours and h0 < h1:
        out.append(("liquidations_1h", h0, h1))
        minute_spans = [(start_ms, h0), (h1, end_ms)]
    for lo, hi in minute_spans:
        if lo >= hi:
            continue
        m0, m1 = ceil_ms(lo, MINUTE_MS), floor_ms(hi, MINUTE_MS)
        if m0 < m1:
            out.append(("liquidations_1m", m0, m1))
            out.extend(("liquidations", a, b) for a, b in ((lo, m0), (m1, hi)) if a < b)
        else:
            out.append(("liquidations", lo, hi))
    return out


def utc_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def bucketed_rows(scope: Scope, side: str | None = None, use_hours: bool = True) -> tuple[sql.Composed, list[Any]]:
    """A subquery `(t, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)`
    over the scope, each row a rollup bucket or (at the edges) one raw liquidation."""
    selects: list[sql.Composable] = []
    params: list[Any] = []
    for table, lo, hi in _segments(scope.start_ms, scope.end_ms, use_hours):
        if table == "liquidations":
            where, p = scope_filters(scope, "time", utc_datetime(lo), utc_datetime(hi), side)
            columns = sql.SQL(
                "time AS t, exchange, symbol, side, source, 1::bigint AS events, quantity, value_usd, value_usd AS max_value_usd"
            )
        else:
            where, p = scope_filters(scope, "bucket", utc_datetime(lo), utc_datetime(hi), side)
            columns = sql.SQL("bucket AS t, " + _BUCKET_COLUMNS)
        selects.append(sql.SQL("SELECT {} FROM {} WHERE {}").format(columns, sql.Identifier(table), where))
        params.extend(p)
    if not selects:  # an empty range: a query with the right columns and no rows
        selects.append(
            sql.SQL(
                "SELECT now() AS t, ''::text AS exchange, ''::text AS symbol, ''::text AS side, ''::text AS source, "
                "0::bigint AS events, 0::numeric AS quantity, 0::numeric AS value_usd, 0::numeric AS max_value_usd "
                "WHERE false"
            )
        )
    return sql.SQL(" UNION ALL ").join(selects), params


def first_event_ms(pool: ConnectionPool, include_nonlive: bool) -> int | None:
    """The oldest liquidation's time (the start of "whole history"), from the hourly rollup."""
    source = sql.SQL("") if include_nonlive else sql.SQL(" WHERE source = 'live'")
    ((first,),) = fetch_all(pool, sql.SQL("SELECT min(bucket) FROM liquidations_1h{}").format(source))
    return None if first is None else int(first.timestamp() * 1000)


def scope_for(view: ViewState, database_url: str, now_ms: int | None = None) -> Scope:
    """The Scope a page's view selects. `now` is floored to 10 s so reruns share cache entries."""
    now = now_ms if now_ms is not None else floor_ms(time.time_ns() // 1_000_000, 10_000)
    first = (
        cached_first_event_ms(database_url, view.include_nonlive) if view.hours is None and view.since is None else None
    )
    start, end = view.time_range(now, first)
    return Scope(start, end, view.symbol_filter, tuple(view.exchanges), view.include_nonlive)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def cached_first_event_ms(database_url: str, include_nonlive: bool) -> int | None:
    return first_event_ms(get_pool(database_url), include_nonlive)
