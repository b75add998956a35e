"""Queries behind the heatmap, cascades, analyses and explorer pages (and `app.cli export`).

Plain functions: they take a psycopg `ConnectionPool` and a `Scope` (what the sidebar selects) and
return pandas DataFrames whose amounts are exact `Decimal`s, so a page's figures equal the rows
to the cent. Errors reaching the database surface as `connections.DataUnavailable`; the pages wrap these
functions in `st.cache_data`.

Long ranges are read from the rollups (db/migrations/0003_rollups.sql): `_bucketed_rows` cuts a
range into whole hours (liquidations_1h), whole minutes at the edges (liquidations_1m) and
seconds at the very edges (raw rows). The rollups always equal the raw rows, so the union is
exact for any range and its cost follows the number of hours, not the number of events.
Every timestamp comes back as an aware UTC datetime; buckets use time_bucket (UTC), never the
session time zone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all, fetch_df, get_pool
from app.state import ViewState

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
EXPLORER_PAGE_ROWS = 100
RAW_COUNT_MAX_DAYS = 31
CASCADE_LIST_LIMIT = 500  # the newest ones; totals always cover every cascade
# Below these the heatmaps are noise rather than a pattern; the page says so.
MIN_SEASONAL_DAYS = 14
MIN_SEASONAL_EVENTS = 500

_BUCKET_COLUMNS = "exchange, symbol, side, source, events, quantity, value_usd, max_value_usd"


@dataclass(frozen=True)
class Scope:
    """What to read: [start_ms, end_ms), one symbol or all (None), some exchanges, live or all sources."""

    start_ms: int
    end_ms: int
    symbol: str | None = "BTCUSDT"
    exchanges: tuple[str, ...] = ("binance", "bybit")
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


def _filters(
    scope: Scope, time_column: str, lo: datetime, hi: datetime, side: str | None
) -> tuple[sql.Composed, list[Any]]:
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


def _objects(values: list[Any], like: pd.DataFrame) -> pd.Series:
    """A column of Decimals (or None) that pandas must not turn into floats."""
    return pd.Series(values, index=like.index, dtype=object)


def _ceil(ms: int, step: int) -> int:
    return -(-ms // step) * step


def _floor(ms: int, step: int) -> int:
    return ms // step * step


def _segments(start_ms: int, end_ms: int, use_hours: bool = True) -> list[tuple[str, int, int]]:
    """Cut [start, end) into (table, lo, hi) pieces: whole hours, whole minutes, then raw seconds."""
    out: list[tuple[str, int, int]] = []
    if start_ms >= end_ms:
        return out
    minute_spans = [(start_ms, end_ms)]
    h0, h1 = _ceil(start_ms, HOUR_MS), _floor(end_ms, HOUR_MS)
    if use_hours and h0 < h1:
        out.append(("liquidations_1h", h0, h1))
        minute_spans = [(start_ms, h0), (h1, end_ms)]
    for lo, hi in minute_spans:
        if lo >= hi:
            continue
        m0, m1 = _ceil(lo, MINUTE_MS), _floor(hi, MINUTE_MS)
        if m0 < m1:
            out.append(("liquidations_1m", m0, m1))
            out.extend(("liquidations", a, b) for a, b in ((lo, m0), (m1, hi)) if a < b)
        else:
            out.append(("liquidations", lo, hi))
    return out


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _bucketed_rows(scope: Scope, side: str | None = None, use_hours: bool = True) -> tuple[sql.Composed, list[Any]]:
    """A subquery `(t, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)`
    over the scope, each row a rollup bucket or (at the edges) one raw liquidation."""
    selects: list[sql.Composable] = []
    params: list[Any] = []
    for table, lo, hi in _segments(scope.start_ms, scope.end_ms, use_hours):
        if table == "liquidations":
            where, p = _filters(scope, "time", _dt(lo), _dt(hi), side)
            columns = sql.SQL(
                "time AS t, exchange, symbol, side, source, 1::bigint AS events, quantity, value_usd, value_usd AS max_value_usd"
            )
        else:
            where, p = _filters(scope, "bucket", _dt(lo), _dt(hi), side)
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


# ---------------------------------------------------------------- heatmap


def hourly_by_side(pool: ConnectionPool, scope: Scope) -> pd.DataFrame:
    """One row per (UTC hour, side) with liquidations: hour, side, events, value_usd."""
    inner, params = _bucketed_rows(scope)
    query = sql.SQL(
        "SELECT time_bucket('1 hour', t) AS hour, side, sum(events)::bigint AS events, sum(value_usd) AS value_usd "
        "FROM ({}) AS b GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(inner)
    return fetch_df(pool, query, params)


def heatmap_matrix(hourly: pd.DataFrame, side: str | None, metric: str, scope: Scope) -> pd.DataFrame:
    """Day (YYYYMMDD) x hour-of-day (0..23) of `metric` ('value_usd' or 'events') for every day of
    the range: zero where the range has no liquidation, None for hours outside the range."""
    frame = hourly if side is None else hourly[hourly["side"] == side]
    first_day = _floor(scope.start_ms, 86_400_000)
    days = list(range(first_day, max(scope.end_ms, first_day + 1), 86_400_000))
    zero: Any = Decimal(0) if metric == "value_usd" else 0
    cells: list[list[Any]] = [
        [zero if d + (h + 1) * HOUR_MS > scope.start_ms and d + h * HOUR_MS < scope.end_ms else None for h in range(24)]
        for d in days
    ]
    if not frame.empty:
        hour_ms = pd.to_datetime(frame["hour"], utc=True).dt.as_unit("ms").astype("int64").tolist()
        for ms, value in zip(hour_ms, frame[metric].tolist(), strict=True):
            row, hod = (ms - first_day) // 86_400_000, (ms % 86_400_000) // HOUR_MS
            if 0 <= row < len(cells) and cells[row][hod] is not None:
                cells[row][hod] += value
    index = pd.Index([f"{_dt(d):%Y%m%d}" for d in days], name="day")
    return pd.DataFrame(cells, index=index, columns=list(range(24)), dtype=object)


def seasonality_matrix(hourly: pd.DataFrame, side: str | None, metric: str, scope: Scope) -> pd.DataFrame:
    """Weekday (Mon..Sun) x hour-of-day: the mean per occurrence of that weekday-hour in the range."""
    frame = hourly if side is None else hourly[hourly["side"] == side]
    weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    hours_in_range = pd.date_range(_dt(_ceil(scope.start_ms, HOUR_MS)), _dt(scope.end_ms), freq="h", inclusive="left")
    occurrences = pd.Series(1, index=hours_in_range).groupby([hours_in_range.day_of_week, hours_in_range.hour]).sum()
    totals = pd.Series(0.0, index=occurrences.index)
    if not frame.empty:
        hours = pd.to_datetime(frame["hour"], utc=True)
        values = frame[metric].astype(float).to_numpy()
        summed = pd.Series(values).groupby([hours.dt.day_of_week.to_numpy(), hours.dt.hour.to_numpy()]).sum()
        totals = totals.add(summed, fill_value=0.0)
    mean = (totals / occurrences).fillna(0.0)
    matrix = mean.unstack(1).reindex(index=range(7), columns=range(24)).fillna(0.0)
    matrix.index = pd.Index(weekdays, name="weekday")
    return matrix


def sample_warning(hourly: pd.DataFrame, scope: Scope) -> str | None:
    """A sentence when the range is too short or too quiet for a pattern to mean much."""
    events = int(hourly["events"].sum()) if not hourly.empty else 0
    reasons = []
    if scope.days < MIN_SEASONAL_DAYS:
        reasons.append(f"only {scope.days:.1f} days (fewer than {MIN_SEASONAL_DAYS})")
    if events < MIN_SEASONAL_EVENTS:
        reasons.append(f"only {events:,} liquidations (fewer than {MIN_SEASONAL_EVENTS:,})")
    if not reasons:
        return None
    return "Small sample: " + " and ".join(reasons) + ". Patterns here may be chance, not seasonality."


# ---------------------------------------------------------------- analyses


BUCKETS: dict[str, str] = {
    "1m": "1 minute",
    "5m": "5 minutes",
    "15m": "15 minutes",
    "1h": "1 hour",
    "4h": "4 hours",
    "1d": "1 day",
}


def volume_series(pool: ConnectionPool, scope: Scope, interval: str) -> pd.DataFrame:
    """Per bucket, exchange and side: events, value_usd, largest single liquidation."""
    if interval not in BUCKETS:
        raise ValueError(f"unknown interval {interval!r}; one of {', '.join(BUCKETS)}")
    inner, params = _bucketed_rows(scope, use_hours=interval in ("1h", "4h", "1d"))
    query = sql.SQL(
        "SELECT time_bucket({}::interval, t) AS bucket, exchange, side, sum(events)::bigint AS events, "
        "sum(value_usd) AS value_usd, max(max_value_usd) AS max_value_usd "
        "FROM ({}) AS b GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).format(sql.Literal(BUCKETS[interval]), inner)
    return fetch_df(pool, query, params)


def daily_summary(series: pd.DataFrame) -> pd.DataFrame:
    """From a 1-day `volume_series`: one row per UTC day with value_usd, events, long_usd,
    short_usd, long_share_pct and the largest single liquidation."""
    columns = ["day", "value_usd", "events", "long_usd", "short_usd", "long_share_pct", "largest_usd"]
    days: dict[str, dict[str, Any]] = {}
    for bucket, side, events, usd, largest in zip(
        series["bucket"], series["side"], series["events"], series["value_usd"], series["max_value_usd"], strict=True
    ):
        day = days.setdefault(
            f"{bucket:%Y%m%d}",
            {"value_usd": Decimal(0), "events": 0, "long_usd": Decimal(0), "largest_usd": Decimal(0)},
        )
        day["value_usd"] += usd
        day["events"] += int(events)
        day["long_usd"] += usd if side == "LONG" else 0
        day["largest_usd"] = max(day["largest_usd"], largest)
    rows = [
        {
            "day": day,
            **v,
            "short_usd": v["value_usd"] - v["long_usd"],
            "long_share_pct": v["long_usd"] / v["value_usd"] * 100 if v["value_usd"] else None,
        }
        for day, v in sorted(days.items())
    ]
    return pd.DataFrame(rows, columns=columns)


def totals_by(series: pd.DataFrame, column: str) -> pd.DataFrame:
    """Sum a `volume_series` frame by one column (side or exchange), with each share in %."""
    if series.empty:
        return pd.DataFrame(columns=[column, "events", "value_usd", "share_pct"])
    grouped = series.groupby(column, sort=True).agg(
        events=("events", "sum"), value_usd=("value_usd", lambda s: sum(s, Decimal(0)))
    )
    total = sum(grouped["value_usd"], Decimal(0))
    grouped["share_pct"] = [(v / total * 100) if total else None for v in grouped["value_usd"]]
    return grouped.reset_index()


def price_levels(pool: ConnectionPool, scope: Scope, buckets: int = 40) -> pd.DataFrame:
    """Liquidated USD by realised price level and side.

    The price of a rollup row is its volume-weighted average (value_usd / quantity) over one
    minute (ranges up to 7 days) or one hour (longer ranges), which puts those liquidations at
    their mean fill; the edges of the range use exact prices.
    """
    # Minute prices for up to a week; hourly ones beyond (a year of minutes is millions of rows).
    inner, params = _bucketed_rows(scope, use_hours=scope.days > 7)
    query = sql.SQL(
        "WITH p AS (SELECT side, events, value_usd, value_usd / quantity AS price FROM ({}) AS b), "
        "r AS (SELECT min(price) AS lo, max(price) AS hi FROM p) "
        "SELECT CASE WHEN r.hi = r.lo THEN r.lo ELSE r.lo + (r.hi - r.lo) / %s * "
        "  (least(floor((p.price - r.lo) / (r.hi - r.lo) * %s), %s - 1)) END AS price_level, "
        "CASE WHEN r.hi = r.lo THEN 0 ELSE (r.hi - r.lo) / %s END AS width, "
        "p.side, sum(p.events)::bigint AS events, sum(p.value_usd) AS value_usd "
        "FROM p CROSS JOIN r GROUP BY 1, 2, 3 ORDER BY 1, 3"
    ).format(inner)
    return fetch_df(pool, query, [*params, buckets, buckets, buckets, buckets])


def exchange_summary(series: pd.DataFrame) -> pd.DataFrame:
    """Per exchange from a `volume_series`: events, value_usd, largest, long/short USD, average
    size and long share."""
    columns = ["exchange", "events", "value_usd", "largest_usd", "long_usd", "short_usd", "avg_usd", "long_share_pct"]
    acc: dict[str, dict[str, Any]] = {}
    for exchange, side, events, usd, largest in zip(
        series["exchange"], series["side"], series["events"], series["value_usd"], series["max_value_usd"], strict=True
    ):
        a = acc.setdefault(
            exchange, {"events": 0, "value_usd": Decimal(0), "largest_usd": Decimal(0), "long_usd": Decimal(0)}
        )
        a["events"] += int(events)
        a["value_usd"] += usd
        a["largest_usd"] = max(a["largest_usd"], largest)
        a["long_usd"] += usd if side == "LONG" else 0
    rows = [
        {
            "exchange": exchange,
            **a,
            "short_usd": a["value_usd"] - a["long_usd"],
            "avg_usd": a["value_usd"] / a["events"] if a["events"] else None,
            "long_share_pct": a["long_usd"] / a["value_usd"] * 100 if a["value_usd"] else None,
        }
        for exchange, a in sorted(acc.items())
    ]
    return pd.DataFrame(rows, columns=columns)


def exchange_timing(pool: ConnectionPool, scope: Scope) -> pd.DataFrame:
    """Per exchange, its share of liquidations by UTC hour of day (when each venue is busy)."""
    inner, params = _bucketed_rows(scope)
    timing = fetch_df(
        pool,
        sql.SQL(
            "SELECT exchange, extract(hour FROM t AT TIME ZONE 'UTC')::int AS hour, sum(events)::bigint AS events "
            "FROM ({}) AS b GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(inner),
        params,
    )
    if not timing.empty:
        timing["share_pct"] = timing["events"] / timing.groupby("exchange")["events"].transform("sum") * 100
    return timing


# ---------------------------------------------------------------- cascades


def _cascade_where(
    scope: Scope, side: str | None, min_usd: Decimal, exchange: str | None
) -> tuple[sql.Composed, list[Any]]:
    where = [sql.SQL("c.start_time < %s AND c.end_time >= %s"), sql.SQL("c.value_usd >= %s")]
    params: list[Any] = [scope.end, scope.start, min_usd]
    if scope.symbol is not None:
        where.append(sql.SQL("c.symbol = %s"))
        params.append(scope.symbol)
    if not scope.include_nonlive:
        where.append(sql.SQL("c.source = 'live'"))
    if side is not None:
        where.append(sql.SQL("c.side = %s"))
        params.append(side)
    where.append(sql.SQL("c.exchanges && %s::text[]"))
    params.append(list(scope.exchanges))
    if exchange is not None:
        where.append(sql.SQL("%s = ANY(c.exchanges)"))
        params.append(exchange)
    return sql.SQL(" AND ").join(where), params


def cascade_totals(
    pool: ConnectionPool,
    scope: Scope,
    *,
    side: str | None = None,
    min_usd: Decimal = Decimal(0),
    exchange: str | None = None,
) -> tuple[int, Decimal]:
    """How many cascades the filters select and their USD (all of them, not only the listed ones)."""
    where, params = _cascade_where(scope, side, min_usd, exchange)
    query = sql.SQL("SELECT count(*), coalesce(sum(c.value_usd), 0) FROM cascades c WHERE {}").format(where)
    (count, usd), *_ = fetch_all(pool, query, params)
    return int(count), Decimal(usd)


def cascades(
    pool: ConnectionPool,
    scope: Scope,
    *,
    side: str | None = None,
    min_usd: Decimal = Decimal(0),
    exchange: str | None = None,
    limit: int = CASCADE_LIST_LIMIT,
) -> pd.DataFrame:
    """The newest `limit` cascades overlapping the range, with the price move 15 and 60 minutes after.

    The moves after are measured from the cascade's last price (price_end, else the close of its
    last minute) to the close of the minute 15 / 60 minutes after it ends, on the first of its
    exchanges that has that candle; a missing candle (gap, or not yet happened) gives None.
    """
    where, params = _cascade_where(scope, side, min_usd, exchange)
    query = sql.SQL(
        "SELECT c.id, c.symbol, c.side, c.start_time, c.end_time, c.events, c.quantity, c.value_usd, "
        "c.exchanges, c.events_by_exchange, c.cross_exchange, c.peak_minute, c.price_start, c.price_end, "
        "c.price_move_pct, c.risk_score, c.active, c.source "
        "FROM cascades c WHERE {} ORDER BY c.start_time DESC, c.id LIMIT %s"
    ).format(where)
    params.append(limit)
    frame = fetch_df(pool, query, params)
    if frame.empty:
        return frame
    frame["duration_s"] = [(e - s).total_seconds() for s, e in zip(frame["start_time"], frame["end_time"], strict=True)]
    closes = _closes_after(pool, frame, scope.include_nonlive)
    base = [
        p if isinstance(p, Decimal) else closes.get((cid, 0))
        for cid, p in zip(frame["id"], frame["price_end"], strict=True)
    ]
    for minutes in (15, 60):
        after = [closes.get((cid, minutes)) for cid in frame["id"]]
        frame[f"close_{minutes}m"] = _objects(after, frame)
        frame[f"move_{minutes}m_pct"] = _objects([_move(b, a) for b, a in zip(base, after, strict=True)], frame)
    frame["base_price"] = _objects(base, frame)
    return frame


def _closes_after(pool: ConnectionPool, frame: pd.DataFrame, include_nonlive: bool) -> dict[tuple[int, int], Decimal]:
    """(cascade id, minutes after its last minute) -> candle close, for 0, 15 and 60 minutes.

    One query with constant arrays rather than a lookup per cascade: TimescaleDB then skips
    every candle chunk that holds none of the wanted minutes."""
    wanted: dict[tuple[str, datetime], list[tuple[int, int, list[str]]]] = {}
    for cid, symbol, end, exchanges in zip(
        frame["id"], frame["symbol"], frame["end_time"], frame["exchanges"], strict=True
    ):
        last_minute = _dt(_floor(int(end.timestamp() * 1000), MINUTE_MS))
        for minutes in (0, 15, 60):
            key = (symbol, last_minute + timedelta(minutes=minutes))
            wanted.setdefault(key, []).append((int(cid), minutes, sorted(exchanges)))
    source = sql.SQL("") if include_nonlive else sql.SQL(" AND source = 'live'")
    query = sql.SQL(
        "SELECT symbol, time, exchange, close FROM candles WHERE symbol = ANY(%s) AND time = ANY(%s){}"
    ).format(source)
    symbols = sorted({s for s, _ in wanted})
    times = sorted({t for _, t in wanted})
    by_minute: dict[tuple[str, datetime], dict[str, Decimal]] = {}
    for symbol, t, exchange, close in fetch_all(pool, query, [symbols, times]):
        by_minute.setdefault((symbol, t), {})[exchange] = close
    out: dict[tuple[int, int], Decimal] = {}
    for key, asks in wanted.items():
        found = by_minute.get(key, {})
        for cid, minutes, exchanges in asks:
            # The first of the cascade's exchanges (by name) that has the candle.
            close = next((found[e] for e in exchanges if e in found), None)
            if close is not None:
                out[(cid, minutes)] = close
    return out


def _move(base: Decimal | None, after: Decimal | None) -> Decimal | None:
    if not isinstance(base, Decimal) or not isinstance(after, Decimal) or not base:
        return None
    return (after - base) / base * 100


def cascade_members(pool: ConnectionPool, cascade_id: int, start_ms: int, end_ms: int) -> pd.DataFrame:
    """The liquidations that make up one cascade (between its start and end), oldest first.
    The time bounds let TimescaleDB open only the chunks of those days."""
    query = sql.SQL(
        "SELECT time, exchange, symbol, side, quantity, price, value_usd, source, sampled, event_key "
        "FROM liquidations WHERE cascade_id = %s AND time >= %s AND time <= %s ORDER BY time, event_key"
    )
    return fetch_df(pool, query, [cascade_id, _dt(start_ms), _dt(end_ms)])


def candles_between(
    pool: ConnectionPool, symbol: str, start_ms: int, end_ms: int, include_nonlive: bool
) -> pd.DataFrame:
    """1-minute candles of one symbol (every exchange) in [start, end), for zoomed charts."""
    source = sql.SQL("") if include_nonlive else sql.SQL(" AND source = 'live'")
    query = sql.SQL(
        "SELECT time, exchange, open, high, low, close, volume FROM candles "
        "WHERE symbol = %s AND time >= %s AND time < %s{} ORDER BY exchange, time"
    ).format(source)
    return fetch_df(pool, query, [symbol, _dt(start_ms), _dt(end_ms)])


# ---------------------------------------------------------------- explorer


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
    where, params = _filters(f.scope, "time", f.scope.start, f.scope.end, f.side)
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
    lo = _dt(_floor(f.scope.start_ms, HOUR_MS))
    # Whole hours below `upper` only: the hour holding `upper` also counts rows at or after it.
    top = _dt(_floor(int(upper.timestamp() * 1000), HOUR_MS))
    where, params = _filters(f.scope, "bucket", lo, top, f.side)
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
        inner, params = _bucketed_rows(f.scope, f.side)
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


def first_event_ms(pool: ConnectionPool, include_nonlive: bool) -> int | None:
    """The oldest liquidation's time (the start of "whole history"), from the hourly rollup."""
    source = sql.SQL("") if include_nonlive else sql.SQL(" WHERE source = 'live'")
    ((first,),) = fetch_all(pool, sql.SQL("SELECT min(bucket) FROM liquidations_1h{}").format(source))
    return None if first is None else int(first.timestamp() * 1000)


# ---------------------------------------------------------------- Streamlit wrappers

_TTL_S = 30


def scope_for(view: ViewState, database_url: str, now_ms: int | None = None) -> Scope:
    """The Scope a page's view selects. `now` is floored to 10 s so reruns share cache entries."""
    now = now_ms if now_ms is not None else _floor(time.time_ns() // 1_000_000, 10_000)
    first = (
        cached_first_event_ms(database_url, view.include_nonlive) if view.hours is None and view.since is None else None
    )
    start, end = view.time_range(now, first)
    return Scope(start, end, view.symbol_filter, tuple(view.exchanges), view.include_nonlive)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_first_event_ms(database_url: str, include_nonlive: bool) -> int | None:
    return first_event_ms(get_pool(database_url), include_nonlive)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_hourly_by_side(database_url: str, scope: Scope) -> pd.DataFrame:
    return hourly_by_side(get_pool(database_url), scope)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_volume_series(database_url: str, scope: Scope, interval: str) -> pd.DataFrame:
    return volume_series(get_pool(database_url), scope, interval)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_price_levels(database_url: str, scope: Scope, buckets: int) -> pd.DataFrame:
    return price_levels(get_pool(database_url), scope, buckets)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_exchange_timing(database_url: str, scope: Scope) -> pd.DataFrame:
    return exchange_timing(get_pool(database_url), scope)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_cascades(
    database_url: str, scope: Scope, side: str | None, min_usd: Decimal, exchange: str | None
) -> pd.DataFrame:
    return cascades(get_pool(database_url), scope, side=side, min_usd=min_usd, exchange=exchange)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_cascade_totals(
    database_url: str, scope: Scope, side: str | None, min_usd: Decimal, exchange: str | None
) -> tuple[int, Decimal]:
    return cascade_totals(get_pool(database_url), scope, side=side, min_usd=min_usd, exchange=exchange)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_cascade_members(database_url: str, cascade_id: int, start_ms: int, end_ms: int) -> pd.DataFrame:
    return cascade_members(get_pool(database_url), cascade_id, start_ms, end_ms)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_candles_between(
    database_url: str, symbol: str, start_ms: int, end_ms: int, include_nonlive: bool
) -> pd.DataFrame:
    return candles_between(get_pool(database_url), symbol, start_ms, end_ms, include_nonlive)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_explorer_page(
    database_url: str, f: ExplorerFilter, after: tuple[datetime, int] | None, limit: int
) -> pd.DataFrame:
    return explorer_page(get_pool(database_url), f, after, limit)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def cached_explorer_count(database_url: str, f: ExplorerFilter) -> tuple[int, Decimal] | None:
    return explorer_count(get_pool(database_url), f)
