"""History from TimescaleDB: totals over any range, candles, liquidation bars and coverage.

Long ranges read the rollups (liquidations_1h / _1m, always equal to the raw rows); only the
partial minutes at the edges of a range read raw rows, so totals are exact for any [start, end)
and stay fast over a year. All functions take an open pool plus filters and return plain data;
the `cached_*` wrappers at the end add short-TTL Streamlit caching keyed by the database URL.
Times are epoch milliseconds, ranges half-open [start, end).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import db_errors, fetch_all, fetch_df, get_pool
from common.instruments import cascade_names

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
_TTL_S = 15


@dataclass(frozen=True)
class Filters:
    """What to count: one symbol (None = all), some exchanges, live rows only or every source."""

    symbol: str | None
    exchanges: tuple[str, ...]
    live_only: bool = True
    side: str | None = None


@dataclass
class Agg:
    events: int = 0
    quantity: Decimal = Decimal(0)
    usd: Decimal = Decimal(0)

    def add(self, events: int, quantity: Decimal, usd: Decimal) -> None:
        self.events += int(events)
        self.quantity += quantity
        self.usd += usd


@dataclass
class Breakdown:
    """Totals overall, per side (LONG/SHORT) and per exchange."""

    total: Agg = field(default_factory=Agg)
    by_side: dict[str, Agg] = field(default_factory=dict)
    by_exchange: dict[str, Agg] = field(default_factory=dict)
    max_usd: Decimal | None = None

    def add(self, exchange: str, side: str, events: int, quantity: Decimal, usd: Decimal) -> None:
        self.total.add(events, quantity, usd)
        self.by_side.setdefault(side, Agg()).add(events, quantity, usd)
        self.by_exchange.setdefault(exchange, Agg()).add(events, quantity, usd)


@dataclass
class Coverage:
    """How much of [start, end) each exchange's streams were connected, and the holes."""

    start_ms: int
    end_ms: int
    pct_by_exchange: dict[str, float]
    gaps: list[tuple[int, int, str]]  # (start, end, exchange) with no connection

    @property
    def pct_all(self) -> float:
        """Share of the period every selected exchange was connected (the weakest bound)."""
        return min(self.pct_by_exchange.values()) if self.pct_by_exchange else 0.0

    def merged_gaps(self, min_ms: int = 0) -> list[tuple[int, int]]:
        """Stretches where at least one exchange was missing, merged, ignoring ones shorter than min_ms."""
        return [g for g in _merge([(s, e) for s, e, _ in self.gaps]) if g[1] - g[0] >= min_ms]


def range_end_ms(step_ms: int = 5_000) -> int:
    """'Now' for history ranges, rounded up to a step: reruns within the step hit the query cache."""
    return -(-time.time_ns() // 1_000_000 // step_ms) * step_ms


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _where(f: Filters, time_col: str, lo: int, hi: int) -> tuple[sql.Composed, list[Any]]:
    parts: list[sql.Composable] = [
        sql.SQL("{} >= %s AND {} < %s").format(sql.Identifier(time_col), sql.Identifier(time_col))
    ]
    params: list[Any] = [ts(lo), ts(hi)]
    parts.append(sql.SQL("exchange = ANY(%s)"))
    params.append(list(f.exchanges))
    if f.symbol is not None:
        parts.append(sql.SQL("symbol = %s"))
        params.append(f.symbol)
    if f.live_only:
        parts.append(sql.SQL("source = 'live'"))
    if f.side is not None:
        parts.append(sql.SQL("side = %s"))
        params.append(f.side)
    return sql.SQL(" AND ").join(parts), params


def segments(start_ms: int, end_ms: int) -> list[tuple[str, int, int]]:
    """Split [start, end) into (table, lo, hi): raw edges, 1m rollups around 1h rollups in the middle."""
    if end_ms <= start_ms:
        return []
    m0 = -(-start_ms // MINUTE_MS) * MINUTE_MS
    m1 = end_ms // MINUTE_MS * MINUTE_MS
    if m0 >= m1:
        return [("liquidations", start_ms, end_ms)]
    h0 = -(-m0 // HOUR_MS) * HOUR_MS
    h1 = m1 // HOUR_MS * HOUR_MS
    out = [("liquidations", start_ms, m0)]
    if h0 < h1:
        out += [("liquidations_1m", m0, h0), ("liquidations_1h", h0, h1), ("liquidations_1m", h1, m1)]
    else:
        out.append(("liquidations_1m", m0, m1))
    out.append(("liquidations", m1, end_ms))
    return [s for s in out if s[2] > s[1]]


_RAW_AGGREGATES = sql.SQL(
    "count(*) AS events, sum(quantity) AS quantity, sum(value_usd) AS usd, max(value_usd) AS max_usd"
)
_ROLLUP_AGGREGATES = sql.SQL(
    "sum(events) AS events, sum(quantity) AS quantity, sum(value_usd) AS usd, max(max_value_usd) AS max_usd"
)


def _segment_select(f: Filters, table: str, lo: int, hi: int, columns: str) -> tuple[sql.Composed, list[Any]]:
    """One segment grouped by exchange and side; `columns` names the aggregates for raw vs rollup rows."""
    raw = table == "liquidations"
    where, params = _where(f, "time" if raw else "bucket", lo, hi)
    aggregates = _RAW_AGGREGATES if raw else _ROLLUP_AGGREGATES
    query = sql.SQL("SELECT {cols}, {aggregates} FROM {table} WHERE {where} GROUP BY {cols}").format(
        cols=sql.SQL(columns), aggregates=aggregates, table=sql.Identifier(table), where=where
    )
    return query, params


def totals(pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int) -> Breakdown:
    """Exact totals over [start, end) per exchange and side, from rollups plus raw edges."""
    out = Breakdown()
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for table, lo, hi in segments(start_ms, end_ms):
        query, p = _segment_select(f, table, lo, hi, "exchange, side")
        parts.append(query)
        params += p
    if not parts:
        return out
    query = sql.SQL(
        "SELECT exchange, side, sum(events)::bigint, sum(quantity), sum(usd), max(max_usd) FROM ({}) s GROUP BY 1, 2"
    ).format(sql.SQL(" UNION ALL ").join(parts))
    for exchange, side, events, quantity, usd, max_usd in fetch_all(pool, query, params):
        out.add(exchange, side, events, quantity, usd)
        if out.max_usd is None or max_usd > out.max_usd:
            out.max_usd = max_usd
    return out


def largest(pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int) -> dict[str, Any] | None:
    """The single largest liquidation: find its bucket in the rollups, then the raw row inside it."""
    best: tuple[Decimal, int, int] | None = None  # (usd, lo, hi) of the bucket holding it
    for table, lo, hi in segments(start_ms, end_ms):
        raw = table == "liquidations"
        col = "time" if raw else "bucket"
        where, params = _where(f, col, lo, hi)
        width = 0 if raw else (MINUTE_MS if table == "liquidations_1m" else HOUR_MS)
        query = sql.SQL("SELECT {col}, {mx} FROM {table} WHERE {where} ORDER BY 2 DESC LIMIT 1").format(
            col=sql.Identifier(col),
            mx=sql.Identifier("value_usd" if raw else "max_value_usd"),
            table=sql.Identifier(table),
            where=where,
        )
        for at, usd in fetch_all(pool, query, params):
            if best is None or usd > best[0]:
                at_ms = to_ms(at)
                best = (usd, max(lo, at_ms), min(hi, at_ms + width) if width else at_ms + 1)
    if best is None:
        return None
    where, params = _where(f, "time", best[1], best[2])
    query = sql.SQL(
        "SELECT time, exchange, symbol, side, quantity, price, value_usd, source, sampled FROM liquidations "
        "WHERE {} ORDER BY value_usd DESC, time LIMIT 1"
    ).format(where)
    rows = fetch_all(pool, query, params)
    if not rows:
        return None
    at, exchange, symbol, side, quantity, price, usd, source, sampled = rows[0]
    return {
        "time_ms": to_ms(at),
        "exchange": exchange,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        "value_usd": usd,
        "source": source,
        "sampled": sampled,
    }


def _edge_row(pool: ConnectionPool, f: Filters, table: str, lo: int, hi: int, last: bool) -> int | None:
    """The earliest (or latest) time/bucket in one table and range, or None."""
    col = "time" if table == "liquidations" else "bucket"
    where, params = _where(f, col, lo, hi)
    query = sql.SQL("SELECT {col} FROM {table} WHERE {where} ORDER BY {col} {order} LIMIT 1").format(
        col=sql.Identifier(col), table=sql.Identifier(table), where=where, order=sql.SQL("DESC" if last else "ASC")
    )
    rows = fetch_all(pool, query, params)
    return to_ms(rows[0][0]) if rows else None


def _edge_event(pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int, last: bool) -> int | None:
    """The first (or last) event time: find the edge bucket in the rollups, then narrow down to the raw row."""
    parts = segments(start_ms, end_ms)
    for table, lo, hi in reversed(parts) if last else parts:
        at = _edge_row(pool, f, table, lo, hi, last)
        if at is None:
            continue
        if table == "liquidations_1h":  # narrow to the minute, then to the row
            table, lo, hi = "liquidations_1m", max(lo, at), min(hi, at + HOUR_MS)
            at = _edge_row(pool, f, table, lo, hi, last)
            if at is None:  # the rollups always match the raw rows; an empty hour means a race with a writer
                continue
        if table == "liquidations_1m":
            return _edge_row(pool, f, "liquidations", max(lo, at), min(hi, at + MINUTE_MS), last)
        return at
    return None


def event_bounds(
    pool: ConnectionPool, f: Filters, start_ms: int = 0, end_ms: int = 2**47
) -> tuple[int | None, int | None]:
    """First and last liquidation time (ms) matching the filters in [start, end) (default: all history)."""
    return _edge_event(pool, f, start_ms, end_ms, last=False), _edge_event(pool, f, start_ms, end_ms, last=True)


def known_symbols(pool: ConnectionPool) -> list[str]:
    """Symbols that have any liquidation (from the small hourly rollup)."""
    return [r[0] for r in fetch_all(pool, "SELECT symbol FROM liquidations_1h GROUP BY symbol ORDER BY symbol")]


def cascade_count(pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int) -> int:
    """Cascades that started in [start, end) on the filtered symbol and exchanges."""
    parts = [sql.SQL("start_time >= %s AND start_time < %s AND exchanges && %s")]
    params: list[Any] = [ts(start_ms), ts(end_ms), list(f.exchanges)]
    if f.symbol is not None:
        parts.append(sql.SQL("symbol = ANY(%s)"))  # canonical cascade names, see cascade_names
        params.append(cascade_names(f.symbol, f.exchanges))
    if f.live_only:
        parts.append(sql.SQL("source = 'live'"))
    if f.side is not None:
        parts.append(sql.SQL("side = %s"))
        params.append(f.side)
    query = sql.SQL("SELECT count(*) FROM cascades WHERE {}").format(sql.SQL(" AND ").join(parts))
    return int(fetch_all(pool, query, params)[0][0])


def liquidation_bars(pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int, interval_ms: int) -> pd.DataFrame:
    """Per bar and side: events, quantity, value_usd. Bars start at multiples of the interval (UTC)."""
    lo = start_ms // interval_ms * interval_ms
    table = "liquidations_1h" if interval_ms >= HOUR_MS and interval_ms % HOUR_MS == 0 else "liquidations_1m"
    where, params = _where(f, "bucket", lo, end_ms)
    query = sql.SQL(
        "SELECT time_bucket(%s::interval, bucket) AS bar, side, sum(events)::bigint AS events, "
        "sum(quantity) AS quantity, sum(value_usd) AS value_usd FROM {} WHERE {} GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(sql.Identifier(table), where)
    return fetch_df(pool, query, [f"{interval_ms // 1000} seconds", *params])


CANDLE_COLUMNS = ["bar", "open", "high", "low", "close", "volume"]
_OHLCV = sql.SQL(
    "first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close, sum(volume) AS volume"
)
_LIVE = sql.SQL(" AND source = 'live'")

# Bars below an hour aggregate 1-minute candles (a few thousand at most: the page caps the bars).
_MINUTE_BARS = sql.SQL(
    "SELECT time_bucket(%s::interval, time) AS bar, {ohlcv} FROM candles "
    "WHERE exchange = %s AND symbol = %s AND time >= %s AND time < %s{live} GROUP BY 1 ORDER BY 1"
)

# Hourly bars and wider aggregate candles_1h (~8,760 rows a year instead of ~525,000 minutes):
# complete hours come from candles_1h, the hour still open at the range end from its minutes.
# With live_only, an hour that also holds non-live minutes (its source is not 'live') is
# recomputed from its live minutes, so both paths give the same bars for any data.
_HOURLY_BARS = sql.SQL(
    "WITH hours AS ("
    " SELECT time, open, high, low, close, volume FROM candles_1h"
    " WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND time >= %(lo)s AND time < %(hour_end)s{live}"
    " UNION ALL"
    " SELECT time_bucket('1 hour', time), {ohlcv} FROM candles"
    " WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND time >= %(hour_end)s AND time < %(end)s{live}"
    " GROUP BY 1{mixed}"
    ") SELECT time_bucket(%(interval)s::interval, time) AS bar, {ohlcv} FROM hours GROUP BY 1 ORDER BY 1"
)
# LATERAL makes the planner probe the minutes of each such hour (usually none) by index, instead
# of scanning every minute of the range for a join.
_MIXED_HOURS = sql.SQL(
    " UNION ALL"
    " SELECT m.time, x.open, x.high, x.low, x.close, x.volume FROM candles_1h AS m CROSS JOIN LATERAL ("
    "  SELECT {ohlcv} FROM candles AS c WHERE c.exchange = m.exchange AND c.symbol = m.symbol"
    "  AND c.time >= m.time AND c.time < m.time + interval '1 hour' AND c.source = 'live') AS x"
    " WHERE m.exchange = %(exchange)s AND m.symbol = %(symbol)s AND m.time >= %(lo)s AND m.time < %(hour_end)s"
    " AND m.source <> 'live' AND x.open IS NOT NULL"
)

_ANY_MIXED_HOUR = sql.SQL(
    "SELECT 1 FROM candles_1h WHERE exchange = %(exchange)s AND symbol = %(symbol)s"
    " AND time >= %(lo)s AND time < %(hour_end)s AND source <> 'live' LIMIT 1"
)


def candles(
    pool: ConnectionPool, exchange: str, symbol: str, start_ms: int, end_ms: int, interval_ms: int, live_only: bool
) -> pd.DataFrame:
    """OHLCV bars of 1-minute candles in [start, end): open of the first minute, close of the last.
    Bars start at multiples of the interval (UTC); hourly and wider bars read candles_1h."""
    lo = start_ms // interval_ms * interval_ms
    live = _LIVE if live_only else sql.SQL("")
    interval = f"{interval_ms // 1000} seconds"
    if interval_ms % HOUR_MS:
        query = _MINUTE_BARS.format(ohlcv=_OHLCV, live=live)
        rows = fetch_all(pool, query, [interval, exchange, symbol, ts(lo), ts(end_ms)])
        return pd.DataFrame(rows, columns=CANDLE_COLUMNS)
    params = {
        "exchange": exchange,
        "symbol": symbol,
        "lo": ts(lo),
        "hour_end": ts(max(lo, end_ms // HOUR_MS * HOUR_MS)),
        "end": ts(end_ms),
        "interval": interval,
    }
    # Planning the LATERAL probe costs a fresh connection ~100 ms (it opens every minute chunk), so
    # it is only added when such hours exist.
    mixed = _MIXED_HOURS.format(ohlcv=_OHLCV) if live_only and fetch_all(pool, _ANY_MIXED_HOUR, params) else sql.SQL("")
    query = _HOURLY_BARS.format(ohlcv=_OHLCV, live=live, mixed=mixed)
    return pd.DataFrame(fetch_all(pool, query, params), columns=CANDLE_COLUMNS)


def marker_limit(span_ms: int) -> int:
    """How many institutional-size markers a chart of this span shows: the largest ones first."""
    return 100 if span_ms <= 8 * 24 * HOUR_MS else 30


def big_liquidations(
    pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int, min_usd: Decimal, limit: int = 100
) -> pd.DataFrame:
    """The largest liquidations of at least `min_usd` (hours found via the hourly rollup first)."""
    where, params = _where(f, "bucket", start_ms // HOUR_MS * HOUR_MS, end_ms)
    hours = fetch_all(
        pool,
        sql.SQL(
            "SELECT bucket FROM liquidations_1h WHERE {} AND max_value_usd >= %s "
            "GROUP BY bucket ORDER BY max(max_value_usd) DESC LIMIT %s"
        ).format(where),
        [*params, min_usd, limit],
    )
    columns = ["time", "exchange", "symbol", "side", "quantity", "price", "value_usd"]
    if not hours:
        return pd.DataFrame(columns=columns)
    # One small query per selected hour, sent in one pipelined batch: each is planned with its own
    # constant range, so it touches one chunk (a single query over the whole period, or a LATERAL
    # join over the hours, scans or probes every chunk of the year). Never prepared: a prepared
    # statement soon switches to a generic plan, which opens every chunk of the hypertable (on a
    # fresh connection that alone costs hundreds of ms).
    raw_where, raw_params = _where(f, "time", start_ms, end_ms)
    query = sql.SQL(
        "SELECT time, exchange, symbol, side, quantity, price, value_usd FROM liquidations "
        "WHERE {} AND time >= %s AND time < %s AND value_usd >= %s"
    ).format(raw_where)
    batch = [[*raw_params, hour, ts(to_ms(hour) + HOUR_MS), min_usd] for (hour,) in hours]
    rows: list[tuple[Any, ...]] = []
    with db_errors(), pool.connection() as conn:
        with conn.pipeline():
            cursors = [conn.execute(query, params, prepare=False) for params in batch]
        for cur in cursors:
            rows += cur.fetchall()
    rows.sort(key=lambda r: r[6], reverse=True)
    return pd.DataFrame(rows[:limit], columns=columns)


def _merge(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def coverage(pool: ConnectionPool, f: Filters, start_ms: int, end_ms: int) -> Coverage:
    """Connected share of [start, end) per exchange from stream_coverage; everything else is a gap."""
    parts = [sql.SQL("exchange = ANY(%s) AND connected_at < %s AND coalesce(disconnected_at, last_seen_at) > %s")]
    params: list[Any] = [list(f.exchanges), ts(end_ms), ts(start_ms)]
    if f.symbol is not None:
        parts.append(sql.SQL("%s = ANY(symbols)"))
        params.append(f.symbol)
    if f.live_only:
        parts.append(sql.SQL("source = 'live'"))
    query = sql.SQL(
        "SELECT exchange, connected_at, coalesce(disconnected_at, last_seen_at) FROM stream_coverage WHERE {}"
    ).format(sql.SQL(" AND ").join(parts))
    spans: dict[str, list[tuple[int, int]]] = {e: [] for e in f.exchanges}
    for exchange, opened, closed in fetch_all(pool, query, params):
        spans[exchange].append((max(start_ms, to_ms(opened)), min(end_ms, to_ms(closed))))
    period = max(1, end_ms - start_ms)
    pct: dict[str, float] = {}
    gaps: list[tuple[int, int, str]] = []
    for exchange, items in spans.items():
        merged = _merge([s for s in items if s[1] > s[0]])
        pct[exchange] = sum(e - s for s, e in merged) / period * 100
        cursor = start_ms
        for s, e in merged:
            if s > cursor:
                gaps.append((cursor, s, exchange))
            cursor = max(cursor, e)
        if cursor < end_ms:
            gaps.append((cursor, end_ms, exchange))
    return Coverage(start_ms, end_ms, pct, gaps)


# --- Streamlit caching wrappers (keyed by URL and plain filter values) --------------------------


def _filters(symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None) -> Filters:
    return Filters(symbol, exchanges, live_only, side)


@st.cache_data(ttl=60, show_spinner=False)
def cached_known_symbols(url: str) -> list[str]:
    return known_symbols(get_pool(url))


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_event_bounds(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None,
    start: int = 0, end: int = 2**47,
) -> tuple[int | None, int | None]:  # fmt: skip
    return event_bounds(get_pool(url), _filters(symbol, exchanges, live_only, side), start, end)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_totals(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None, start: int, end: int
) -> Breakdown:
    return totals(get_pool(url), _filters(symbol, exchanges, live_only, side), start, end)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_largest(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None, start: int, end: int
) -> dict[str, Any] | None:
    return largest(get_pool(url), _filters(symbol, exchanges, live_only, side), start, end)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_cascade_count(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None, start: int, end: int
) -> int:
    return cascade_count(get_pool(url), _filters(symbol, exchanges, live_only, side), start, end)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_coverage(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, start: int, end: int
) -> Coverage:
    return coverage(get_pool(url), _filters(symbol, exchanges, live_only, None), start, end)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_liquidation_bars(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None, start: int, end: int,
    interval_ms: int,
) -> pd.DataFrame:  # fmt: skip
    return liquidation_bars(get_pool(url), _filters(symbol, exchanges, live_only, side), start, end, interval_ms)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_candles(
    url: str, exchange: str, symbol: str, start: int, end: int, interval_ms: int, live_only: bool
) -> pd.DataFrame:
    return candles(get_pool(url), exchange, symbol, start, end, interval_ms, live_only)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_big_liquidations(
    url: str, symbol: str | None, exchanges: tuple[str, ...], live_only: bool, side: str | None, start: int, end: int,
    min_usd: Decimal,
) -> pd.DataFrame:  # fmt: skip
    f = _filters(symbol, exchanges, live_only, side)
    return big_liquidations(get_pool(url), f, start, end, min_usd, marker_limit(end - start))
