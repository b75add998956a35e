"""The one WHERE builder and the one segmenter of ranges onto raw rows and rollups.

`where(q, column, lo, hi)` is the SQL every liquidation query of the app filters with: the range
[lo, hi) on `column` (`time` of raw rows, `bucket` of rollups), the query's venues and venue
symbols (app/query.py resolves a coin or a contract to them), its sources and its side. The
minimum size is row-level: only `where(..., min_usd=True)` on raw rows adds it.

`segments(start, end, tiers, line_ms=...)` cuts [start, end) into (table, lo, hi) pieces: raw rows
for the partial minutes at the edges, `liquidations_1m` for the partial hours, then the hourly
rollup and (for whole UTC days) `liquidations_1d` in the middle (db/migrations/0003, 0016). The
hours and days hold only what lies before the fold's line (`fold_line`, db/migrations/0018): from
the line on, the minutes serve. The rollups always equal the raw rows, so any sum over the pieces
is exact and its cost follows the number of buckets, not of events. The line is read in Python and
every piece's bounds are constants, so TimescaleDB leaves out other chunks when it plans (the
`_all` views, for psql, cost a plan over every minute chunk: ~13 ms a query over a year).

`tiers_for(q, bucket_ms)` says which rollups a reader may use: days only when its results are per
whole day (or one sum), and for the whole market (ALL), when the reader needs no symbol and no
quantity, `liquidations_market_1h` instead of the per-symbol hours (a few rows an hour instead of
one per contract: db/migrations/0015). `bucketed_rows` is the union of the pieces as one
subquery; `hour_rows` the hours (then the minutes) for readers looking for hours. Times are epoch
ms; timestamps are aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all
from app.query import Query
from common.instruments import cascade_names

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
RAW, MINUTES, HOURS, DAYS = "liquidations", "liquidations_1m", "liquidations_1h", "liquidations_1d"
MARKET_HOURS = "liquidations_market_1h"
WIDTH_MS = {RAW: 0, MINUTES: MINUTE_MS, HOURS: HOUR_MS, MARKET_HOURS: HOUR_MS, DAYS: DAY_MS}  # of one row


def ts(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def ceil_ms(ms: int, step: int) -> int:
    return -(-ms // step) * step


def floor_ms(ms: int, step: int) -> int:
    return ms // step * step


def where(
    q: Query, column: str, lo: int, hi: int, *, side: bool = True, min_usd: bool = False
) -> tuple[sql.Composed, list[Any]]:
    """The query's filter over `column` in [lo, hi); `side=False` leaves the side out (both sides),
    `min_usd=True` adds the minimum size (raw rows only)."""
    col = sql.Identifier(column)
    parts: list[sql.Composable] = [sql.SQL("{} >= %s AND {} < %s").format(col, col), sql.SQL("exchange = ANY(%s)")]
    params: list[Any] = [ts(lo), ts(hi), list(q.venues)]
    if q.symbols is not None:
        parts.append(sql.SQL("symbol = ANY(%s)"))
        params.append(list(q.symbols))
    if not q.include_nonlive:
        parts.append(sql.SQL("source = 'live'"))
    if side and q.side is not None:
        parts.append(sql.SQL("side = %s"))
        params.append(q.side)
    if min_usd and q.min_usd > 0:
        parts.append(sql.SQL("value_usd >= %s"))
        params.append(q.min_usd)
    return sql.SQL(" AND ").join(parts), params


def hours_table(q: Query, per_symbol: bool = False) -> str:
    """The hourly rollup for this query: the whole market's when it is ALL and the caller reads
    neither symbols nor quantities (`per_symbol=False`), else the per-symbol one."""
    return MARKET_HOURS if q.symbols is None and not per_symbol else HOURS


def hour_rows(q: Query, lo: int, hi: int, *, line_ms: int) -> tuple[sql.Composed, list[Any]]:
    """A subquery `(bucket, events, max_value_usd)` over [lo, hi) (`lo` an hour boundary), rows of
    the hourly rollup for this query before the fold's line and its minutes, as their hours, from
    it on: several rows an hour, for readers that group by `bucket`."""
    cut = min(max(lo, line_ms), hi)
    folded, params = where(q, "bucket", lo, cut)
    minutes, minute_params = where(q, "bucket", cut, hi)
    query = sql.SQL(
        "SELECT bucket, events, max_value_usd FROM {} WHERE {} UNION ALL "
        "SELECT time_bucket('1 hour', bucket) AS bucket, events, max_value_usd FROM {} WHERE {}"
    ).format(sql.Identifier(hours_table(q)), folded, sql.Identifier(MINUTES), minutes)
    return query, [*params, *minute_params]


def tiers_for(q: Query, bucket_ms: int = 0, per_symbol: bool = False) -> tuple[str, ...]:
    """The rollups, finest first, that a reader may use whose results are per `bucket_ms` (0: sums
    over the whole range): minutes always, hours when its buckets are whole hours, and for a coin
    or a contract days when they are whole UTC days. ALL without symbols reads the whole market's
    hours and no days (a year of them is a few tens of thousands of rows)."""
    out = [MINUTES]
    if bucket_ms % HOUR_MS == 0:
        hours = hours_table(q, per_symbol)
        out.append(hours)
        if hours == HOURS and bucket_ms % DAY_MS == 0:
            out.append(DAYS)
    return tuple(out)


FOLD_LINE = "SELECT folded_through FROM rollup_fold"


def fold_line(pool: ConnectionPool) -> int:
    """The fold's line (epoch ms): the hour and day rollups hold the buckets before it only."""
    ((line,),) = fetch_all(pool, FOLD_LINE)
    return to_ms(line)


def segments(
    start_ms: int, end_ms: int, tiers: tuple[str, ...] = (MINUTES, HOURS), *, line_ms: int
) -> list[tuple[str, int, int]]:
    """[start, end) as (table, lo, hi): raw rows at the edges, then each tier's whole buckets
    inward (`tiers` finest first), the coarsest in the middle; from the fold's line `line_ms` (an
    hour boundary) on, no tier coarser than the minutes."""
    if start_ms < line_ms < end_ms and len(tiers) > 1:
        return _segments(start_ms, line_ms, tiers) + _segments(line_ms, end_ms, tiers[:1])
    return _segments(start_ms, end_ms, tiers if line_ms >= end_ms else tiers[:1])


def _segments(start_ms: int, end_ms: int, tiers: tuple[str, ...]) -> list[tuple[str, int, int]]:
    if end_ms <= start_ms:
        return []
    left: list[tuple[str, int, int]] = []
    right: list[tuple[str, int, int]] = []
    lo, hi, table = start_ms, end_ms, RAW
    for tier in tiers:
        inner_lo, inner_hi = ceil_ms(lo, WIDTH_MS[tier]), floor_ms(hi, WIDTH_MS[tier])
        if inner_lo >= inner_hi:
            break
        left.append((table, lo, inner_lo))
        right.append((table, inner_hi, hi))
        lo, hi, table = inner_lo, inner_hi, tier
    return [s for s in [*left, (table, lo, hi), *reversed(right)] if s[2] > s[1]]


def bucketed_rows(
    q: Query,
    start_ms: int,
    end_ms: int,
    *,
    line_ms: int,
    bucket_ms: int = 0,
    side: bool = True,
    per_symbol: bool = False,
) -> tuple[sql.Composed, list[Any]]:
    """A subquery `(t, exchange, side, source, events, value_usd, max_value_usd)` over [start, end),
    each row a rollup bucket or (at the edges) one raw liquidation, for a reader whose results are
    per `bucket_ms` (see `tiers_for`; `line_ms`: `fold_line`); with `per_symbol` it also has
    `symbol` and `quantity` (and reads the per-symbol rollups even for ALL)."""
    extra = "symbol, quantity, " if per_symbol else ""
    selects: list[sql.Composable] = []
    params: list[Any] = []
    for table, lo, hi in segments(start_ms, end_ms, tiers_for(q, bucket_ms, per_symbol), line_ms=line_ms):
        if table == RAW:
            w, p = where(q, "time", lo, hi, side=side)
            columns = (
                f"time AS t, exchange, side, source, {extra}1::bigint AS events, value_usd, value_usd AS max_value_usd"
            )
        else:
            w, p = where(q, "bucket", lo, hi, side=side)
            columns = f"bucket AS t, exchange, side, source, {extra}events, value_usd, max_value_usd"
        selects.append(sql.SQL("SELECT {} FROM {} WHERE {}").format(sql.SQL(columns), sql.Identifier(table), w))
        params.extend(p)
    if not selects:  # an empty range: a query with the right columns and no rows
        empty = "''::text AS symbol, 0::numeric AS quantity, " if per_symbol else ""
        selects.append(
            sql.SQL(
                "SELECT now() AS t, ''::text AS exchange, ''::text AS side, ''::text AS source, "
                f"{empty}0::bigint AS events, 0::numeric AS value_usd, 0::numeric AS max_value_usd WHERE false"
            )
        )
    return sql.SQL(" UNION ALL ").join(selects), params


def cascade_where(q: Query, start_ms: int, end_ms: int, alias: str = "c") -> tuple[sql.Composed, list[Any]]:
    """Cascades overlapping [start, end) (app.query.CASCADE_RULE) on the query's target, venues,
    sources and side, of at least its minimum size. Cascades are named after the canonical
    instrument (BTC-USDT-PERP), older ones after the venue symbol: both names match."""
    a = sql.Identifier(alias)
    parts: list[sql.Composable] = [
        sql.SQL("{a}.start_time < %s AND {a}.end_time >= %s AND {a}.exchanges && %s::text[]").format(a=a)
    ]
    params: list[Any] = [ts(end_ms), ts(start_ms), list(q.venues)]
    names = cascade_names_of(q)
    if names is not None:
        parts.append(sql.SQL("{a}.symbol = ANY(%s)").format(a=a))
        params.append(names)
    if not q.include_nonlive:
        parts.append(sql.SQL("{a}.source = 'live'").format(a=a))
    if q.side is not None:
        parts.append(sql.SQL("{a}.side = %s").format(a=a))
        params.append(q.side)
    if q.min_usd > 0:
        parts.append(sql.SQL("{a}.value_usd >= %s").format(a=a))
        params.append(q.min_usd)
    return sql.SQL(" AND ").join(parts), params


def cascade_names_of(q: Query) -> list[str] | None:
    """The `cascades.symbol` values the target matches (None: every cascade)."""
    if q.is_all:
        return None
    names: set[str] = set()
    for exchange, symbol in q.target.pairs:
        names.update(cascade_names(symbol, (exchange,)))
    return sorted(names)


def cascade_count(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int) -> int:
    """How many cascades overlap [start, end) (the one rule of every page that counts them)."""
    w, params = cascade_where(q, start_ms, end_ms)
    query = sql.SQL("SELECT count(*) FROM cascades c WHERE {}").format(w)
    return int(fetch_all(pool, query, params)[0][0])


def _edge_row(pool: ConnectionPool, q: Query, table: str, lo: int, hi: int, last: bool) -> int | None:
    col = "time" if table == RAW else "bucket"
    w, params = where(q, col, lo, hi)
    query = sql.SQL("SELECT {col} FROM {table} WHERE {w} ORDER BY {col} {order} LIMIT 1").format(
        col=sql.Identifier(col), table=sql.Identifier(table), w=w, order=sql.SQL("DESC" if last else "ASC")
    )
    rows = fetch_all(pool, query, params)
    return to_ms(rows[0][0]) if rows else None


def finer(tiers: tuple[str, ...], table: str) -> str:
    """The next finer table below `table` in `tiers` (raw rows below the finest)."""
    index = tiers.index(table)
    return tiers[index - 1] if index > 0 else RAW


def edge_event(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, last: bool) -> int | None:
    """The first (or last) matching event time: the edge bucket in the rollups, narrowed tier by
    tier to the raw row."""
    tiers = tiers_for(q)
    parts = segments(start_ms, end_ms, tiers, line_ms=fold_line(pool))
    for table, lo, hi in reversed(parts) if last else parts:
        at = _edge_row(pool, q, table, lo, hi, last)
        while at is not None and table != RAW:  # narrow to the bucket's finer rows
            lo, hi = max(lo, at), min(hi, at + WIDTH_MS[table])
            table = finer(tiers, table)
            at = _edge_row(pool, q, table, lo, hi, last)
        if at is not None:  # None: the rollups always match the raw rows, so a race with a writer
            return at
    return None


WHOLE_HISTORY_END = 2**47


def event_bounds(
    pool: ConnectionPool, q: Query, start_ms: int = 0, end_ms: int = WHOLE_HISTORY_END
) -> tuple[int | None, int | None]:
    """First and last matching liquidation time (ms) in [start, end) (default: all history)."""
    return edge_event(pool, q, start_ms, end_ms, last=False), edge_event(pool, q, start_ms, end_ms, last=True)


def first_event_ms(pool: ConnectionPool, q: Query) -> int | None:
    """Where "whole history" starts for this query: its first matching liquidation."""
    return edge_event(pool, q, 0, WHOLE_HISTORY_END, last=False)


def resolve_range(pool: ConnectionPool, q: Query, now: int) -> tuple[int, int]:
    """The query's [start, end) at `now` (whole history: from its first matching event)."""
    return q.time_range(now, first_event_ms(pool, q) if q.whole_history else None)
