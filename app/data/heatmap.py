"""Queries behind the heatmap page: liquidations per UTC hour and side, shaped into a day x
hour-of-day matrix and a weekday x hour-of-day seasonality matrix.

Plain functions take a psycopg `ConnectionPool`, a `Query` (app/query.py: its side included) and a range; amounts stay exact `Decimal`s.
Errors reaching the database surface as `connections.DataUnavailable`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_df
from app.data.rows import HOUR_MS, bucketed_rows, ceil_ms, floor_ms, fold_line
from app.data.rows import ts as utc_datetime
from app.query import Query

# Below these the heatmaps are noise rather than a pattern; the page says so.
MIN_SEASONAL_DAYS = 14
MIN_SEASONAL_EVENTS = 500


def hourly_by_side(pool: ConnectionPool, q: Query, start_ms: int, end_ms: int) -> pd.DataFrame:
    """One row per (UTC hour, side) with liquidations: hour, side, events, value_usd."""
    inner, params = bucketed_rows(q, start_ms, end_ms, line_ms=fold_line(pool), bucket_ms=HOUR_MS)
    query = sql.SQL(
        "SELECT time_bucket('1 hour', t) AS hour, side, sum(events)::bigint AS events, sum(value_usd) AS value_usd "
        "FROM ({}) AS b GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(inner)
    return fetch_df(pool, query, params)


def heatmap_matrix(hourly: pd.DataFrame, metric: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Day (YYYYMMDD) x hour-of-day (0..23) of `metric` ('value_usd' or 'events') for every day of
    the range: zero where the range has no liquidation, None for hours outside the range."""
    frame = hourly
    first_day = floor_ms(start_ms, 86_400_000)
    days = list(range(first_day, max(end_ms, first_day + 1), 86_400_000))
    zero: Any = Decimal(0) if metric == "value_usd" else 0
    cells: list[list[Any]] = [
        [zero if d + (h + 1) * HOUR_MS > start_ms and d + h * HOUR_MS < end_ms else None for h in range(24)]
        for d in days
    ]
    if not frame.empty:
        hour_ms = pd.to_datetime(frame["hour"], utc=True).dt.as_unit("ms").astype("int64").tolist()
        for ms, value in zip(hour_ms, frame[metric].tolist(), strict=True):
            row, hod = (ms - first_day) // 86_400_000, (ms % 86_400_000) // HOUR_MS
            if 0 <= row < len(cells) and cells[row][hod] is not None:
                cells[row][hod] += value
    index = pd.Index([f"{utc_datetime(d):%Y%m%d}" for d in days], name="day")
    return pd.DataFrame(cells, index=index, columns=list(range(24)), dtype=object)


def seasonality_matrix(hourly: pd.DataFrame, metric: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Weekday (Mon..Sun) x hour-of-day: the mean per occurrence of that weekday-hour in the range."""
    frame = hourly
    weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    hours_in_range = pd.date_range(
        utc_datetime(ceil_ms(start_ms, HOUR_MS)), utc_datetime(end_ms), freq="h", inclusive="left"
    )
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


def sample_warning(hourly: pd.DataFrame, start_ms: int, end_ms: int) -> str | None:
    """A sentence when the range is too short or too quiet for a pattern to mean much."""
    events = int(hourly["events"].sum()) if not hourly.empty else 0
    days = (end_ms - start_ms) / 86_400_000
    reasons = []
    if days < MIN_SEASONAL_DAYS:
        reasons.append(f"only {days:.1f} days (fewer than {MIN_SEASONAL_DAYS})")
    if events < MIN_SEASONAL_EVENTS:
        reasons.append(f"only {events:,} liquidations (fewer than {MIN_SEASONAL_EVENTS:,})")
    if not reasons:
        return None
    return "Small sample: " + " and ".join(reasons) + ". Patterns here may be chance, not seasonality."
