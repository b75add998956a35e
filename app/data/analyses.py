"""Queries behind the analyses page: volume per interval, daily and exchange summaries,
liquidations by price level, and when each exchange is busy.

Plain functions take a psycopg `ConnectionPool`, a `Query` (app/query.py) and a range, and return DataFrames whose amounts
are exact `Decimal`s, so a page's figures equal the rows to the cent. Errors reaching the
database surface as `connections.DataUnavailable`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_df
from app.data.rows import HOUR_MS, MINUTE_MS, bucketed_rows, fold_line
from app.query import INTERVAL_MS, Query

BUCKETS: dict[str, str] = {
    "1m": "1 minute",
    "5m": "5 minutes",
    "15m": "15 minutes",
    "1h": "1 hour",
    "4h": "4 hours",
    "1d": "1 day",
}


def volume_series(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, interval: str) -> pd.DataFrame:
    """Per bucket, exchange and side: events, value_usd, largest single liquidation."""
    if interval not in BUCKETS:
        raise ValueError(f"unknown interval {interval!r}; one of {', '.join(BUCKETS)}")
    inner, params = bucketed_rows(q, start_ms, end_ms, line_ms=fold_line(pool), bucket_ms=INTERVAL_MS[interval])
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


def price_levels(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, buckets: int = 40) -> pd.DataFrame:
    """Liquidated USD by realised price level and side.

    The price of a rollup row is its volume-weighted average (value_usd / quantity) over one
    minute (ranges up to 7 days) or one hour (longer ranges), which puts those liquidations at
    their mean fill; the edges of the range use exact prices.
    """
    # Minute prices for up to a week; hourly ones beyond (a year of minutes is millions of rows).
    bucket_ms = HOUR_MS if end_ms - start_ms > 7 * 86_400_000 else MINUTE_MS
    inner, params = bucketed_rows(q, start_ms, end_ms, line_ms=fold_line(pool), bucket_ms=bucket_ms, per_symbol=True)
    # Levels are placed in float8 (display only: a row on a boundary may land in either level);
    # the sums stay exact numerics. Numeric arithmetic per row took twice as long (a BTC year:
    # 146 vs 80 ms, bench/bench_pages.py).
    query = sql.SQL(
        "WITH p AS MATERIALIZED (SELECT side, events, value_usd, value_usd::float8 / quantity::float8 AS price "
        "  FROM ({}) AS b), "
        "r AS (SELECT min(price) AS lo, max(price) AS hi FROM p), "
        "g AS (SELECT CASE WHEN r.hi = r.lo THEN 0 "
        "  ELSE least(floor((p.price - r.lo) / (r.hi - r.lo) * %s), %s - 1)::int END AS level, "
        "  p.side, sum(p.events)::bigint AS events, sum(p.value_usd) AS value_usd FROM p CROSS JOIN r GROUP BY 1, 2) "
        "SELECT (r.lo + (r.hi - r.lo) / %s * g.level)::numeric AS price_level, "
        "((r.hi - r.lo) / %s)::numeric AS width, g.side, g.events, g.value_usd "
        "FROM g CROSS JOIN r ORDER BY 1, 3"
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


def exchange_timing(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Per exchange, its share of liquidations by UTC hour of day (when each venue is busy)."""
    inner, params = bucketed_rows(q, start_ms, end_ms, line_ms=fold_line(pool), bucket_ms=HOUR_MS)
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
