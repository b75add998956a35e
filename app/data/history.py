"""History from TimescaleDB: totals over any range, candles, liquidation bars and coverage.

Long ranges read the rollups (hourly and per minute, always equal to the raw rows); only the
partial minutes at the edges of a range read raw rows, so totals are exact for any [start, end)
and stay fast over a year. All functions take an open pool plus a `Query` (app/query.py) and
return plain data; the filter is app.data.rows.where, the pieces app.data.rows.segments.
app/cache.py caches them for the pages. Times are epoch milliseconds, ranges half-open [start, end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import db_errors, fetch_all, fetch_df
from app.data.rows import (
    HOUR_MS,
    MARKET_HOURS,
    RAW,
    WIDTH_MS,
    bucketed_rows,
    finer,
    fold_line,
    hour_rows,
    segments,
    tiers_for,
    to_ms,
    ts,
    where,
)
from app.query import Query
from common import venues
from common.instruments import PERPETUAL, guess_instrument


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


_RAW_AGGREGATES = sql.SQL(
    "count(*) AS events, sum(quantity) AS quantity, sum(value_usd) AS usd, max(value_usd) AS max_usd"
)
_ROLLUP_AGGREGATES = sql.SQL(
    "sum(events) AS events, sum(quantity) AS quantity, sum(value_usd) AS usd, max(max_value_usd) AS max_usd"
)
_MARKET_AGGREGATES = sql.SQL(
    "sum(events) AS events, NULL::numeric AS quantity, sum(value_usd) AS usd, max(max_value_usd) AS max_usd"
)


def _segment_select(q: Query, table: str, lo: int, hi: int, columns: str) -> tuple[sql.Composed, list[Any]]:
    """One segment grouped by `columns`, with its events, quantity (NULL in the market rollup),
    USD and largest liquidation."""
    raw = table == RAW
    w, params = where(q, "time" if raw else "bucket", lo, hi)
    aggregates = _RAW_AGGREGATES if raw else _MARKET_AGGREGATES if table == MARKET_HOURS else _ROLLUP_AGGREGATES
    query = sql.SQL("SELECT {cols}, {aggregates} FROM {table} WHERE {where} GROUP BY {cols}").format(
        cols=sql.SQL(columns), aggregates=aggregates, table=sql.Identifier(table), where=w
    )
    return query, params


def totals(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int) -> Breakdown:
    """Exact totals over [start, end) per exchange and side, from rollups plus raw edges; quantities
    in canonical base units (they add up for one coin; for ALL, whose quantities mean nothing and
    are not shown, they stay 0: the whole market's hourly rollup has none)."""
    out = Breakdown()
    whole_market = q.symbols is None
    columns = "exchange, side" if whole_market else "exchange, symbol, side"
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for table, lo, hi in segments(start_ms, end_ms, tiers_for(q), line_ms=fold_line(pool)):
        query, p = _segment_select(q, table, lo, hi, columns)
        parts.append(query)
        params += p
    if not parts:
        return out
    query = sql.SQL(
        "SELECT exchange, {symbol}, side, sum(events)::bigint, sum(quantity), sum(usd), max(max_usd) "
        "FROM ({parts}) s GROUP BY 1, 2, 3"
    ).format(symbol=sql.SQL("NULL" if whole_market else "symbol"), parts=sql.SQL(" UNION ALL ").join(parts))
    for exchange, symbol, side, events, quantity, usd, max_usd in fetch_all(pool, query, params):
        # Quantities in the coin's canonical base: a 1000PEPE quantity counts 1000 PEPE each.
        base = Decimal(0) if whole_market else guess_instrument(exchange, symbol).canonical_quantity(quantity)
        out.add(exchange, side, events, base, usd)
        if out.max_usd is None or max_usd > out.max_usd:
            out.max_usd = max_usd
    return out


def _largest_bucket(pool: ConnectionPool, q: Query, table: str, lo: int, hi: int) -> tuple[Decimal, int] | None:
    """The largest liquidation's USD in `table` over [lo, hi) and the start of its bucket (its time for raw rows)."""
    raw = table == RAW
    col = "time" if raw else "bucket"
    w, params = where(q, col, lo, hi)
    query = sql.SQL("SELECT {col}, {mx} FROM {table} WHERE {where} ORDER BY 2 DESC LIMIT 1").format(
        col=sql.Identifier(col),
        mx=sql.Identifier("value_usd" if raw else "max_value_usd"),
        table=sql.Identifier(table),
        where=w,
    )
    rows = fetch_all(pool, query, params)
    return (rows[0][1], to_ms(rows[0][0])) if rows else None


def largest(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int) -> dict[str, Any] | None:
    """The single largest liquidation: find its bucket in the rollups, narrow it tier by tier to an
    hour or a minute, then take the raw row inside it."""
    tiers = tiers_for(q)
    best: tuple[Decimal, str, int, int] | None = None  # (usd, table, lo, hi) of the bucket holding it
    for table, lo, hi in segments(start_ms, end_ms, tiers, line_ms=fold_line(pool)):
        found = _largest_bucket(pool, q, table, lo, hi)
        if found is not None and (best is None or found[0] > best[0]):
            usd, at = found
            width = WIDTH_MS[table]
            best = (usd, table, max(lo, at), min(hi, at + width) if width else at + 1)
    while best is not None and WIDTH_MS[best[1]] > HOUR_MS:  # a day: find its hour (an hour of raw rows is cheap)
        usd, table, lo, hi = best
        table = finer(tiers, table)
        found = _largest_bucket(pool, q, table, lo, hi)
        best = None if found is None else (found[0], table, max(lo, found[1]), min(hi, found[1] + WIDTH_MS[table]))
    if best is None:
        return None
    w, params = where(q, "time", best[2], best[3])
    query = sql.SQL(
        "SELECT time, exchange, symbol, side, quantity, price, value_usd, source, sampled FROM liquidations "
        "WHERE {} ORDER BY value_usd DESC, time LIMIT 1"
    ).format(w)
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


def liquidation_bars(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, interval_ms: int) -> pd.DataFrame:
    """Per bar and side: events, quantity, value_usd of [bar start, end). Bars start at multiples of
    the interval (UTC), the first at or before `start`; each reads the coarsest rollup its bars
    allow (days for daily bars of a coin, the whole market's hours for ALL) plus raw edges. For ALL
    the quantity is None: coins do not add up."""
    lo = start_ms // interval_ms * interval_ms
    whole_market = q.symbols is None
    inner, params = bucketed_rows(
        q, lo, end_ms, line_ms=fold_line(pool), bucket_ms=interval_ms, per_symbol=not whole_market
    )
    quantity = "NULL::numeric" if whole_market else "sum(quantity)"
    query = sql.SQL(
        "SELECT time_bucket(%s::interval, t) AS bar, side, sum(events)::bigint AS events, "
        "{} AS quantity, sum(value_usd) AS value_usd FROM ({}) AS b GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(sql.SQL(quantity), inner)
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


def price_pair(q: Query) -> tuple[str, str] | None:
    """The contract whose candles draw the target's price: of the target's contracts on the chosen
    venues, a USDT perpetual without a multiplier first, in the registry's venue order (None for ALL)."""
    if q.is_all:
        return None
    order = {e: i for i, e in enumerate(venues.NAMES)}
    pairs = [(e, s) for e, s in q.target.pairs if e in q.venues]

    def rank(pair: tuple[str, str]) -> tuple[int, int, int, str]:
        inst = guess_instrument(*pair)
        plain = inst.quote == "USDT" and inst.contract_type == PERPETUAL and inst.multiplier == 1
        return (0 if plain else 1, order.get(pair[0], 99), len(pair[1]), pair[1])

    return min(pairs, key=rank) if pairs else None


def candles(
    pool: ConnectionPool, exchange: str, symbol: str, start_ms: int, end_ms: int, interval_ms: int, live_only: bool
) -> pd.DataFrame:
    """OHLCV bars of 1-minute candles of one contract in [start, end): open of the first minute,
    close of the last. Bars start at multiples of the interval (UTC); hourly and wider bars read candles_1h."""
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
    pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, min_usd: Decimal, limit: int = 100
) -> pd.DataFrame:
    """The largest liquidations of at least `min_usd` (hours found via the hourly rollup first)."""
    hour_query, params = hour_rows(q, start_ms // HOUR_MS * HOUR_MS, end_ms, line_ms=fold_line(pool))
    hours = fetch_all(
        pool,
        sql.SQL(
            "SELECT bucket FROM ({}) AS r WHERE max_value_usd >= %s "
            "GROUP BY bucket ORDER BY max(max_value_usd) DESC LIMIT %s"
        ).format(hour_query),
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
    raw_w, raw_params = where(q, "time", start_ms, end_ms)
    query = sql.SQL(
        "SELECT time, exchange, symbol, side, quantity, price, value_usd FROM liquidations "
        "WHERE {} AND time >= %s AND time < %s AND value_usd >= %s"
    ).format(raw_w)
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


def coverage(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int) -> Coverage:
    """Connected share of [start, end) per exchange from stream_coverage; everything else is a gap."""
    parts = [sql.SQL("exchange = ANY(%s) AND connected_at < %s AND coalesce(disconnected_at, last_seen_at) > %s")]
    params: list[Any] = [list(q.venues), ts(end_ms), ts(start_ms)]
    if q.symbols is not None:
        parts.append(sql.SQL("symbols && %s::text[]"))
        params.append(list(q.symbols))
    if not q.include_nonlive:
        parts.append(sql.SQL("source = 'live'"))
    query = sql.SQL(
        "SELECT exchange, connected_at, coalesce(disconnected_at, last_seen_at) FROM stream_coverage WHERE {}"
    ).format(sql.SQL(" AND ").join(parts))
    spans: dict[str, list[tuple[int, int]]] = {e: [] for e in q.venues}
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
