"""Queries behind the cascades page: the cascades a filter selects (with the price move after
each), their totals, one cascade's liquidations and the candles around it.

Plain functions take a psycopg `ConnectionPool`, a `Query` (app/query.py) and a range; the
cascades a query selects are the ones overlapping the range (app.data.rows.cascade_where, the one rule); amounts stay exact `Decimal`s.
Errors reaching the database surface as `connections.DataUnavailable`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import fetch_all, fetch_df
from app.data.rows import MINUTE_MS, cascade_where, floor_ms
from app.data.rows import ts as utc_datetime
from app.query import Query
from common.instruments import venue_symbols

CASCADE_LIST_LIMIT = 500  # the newest ones; totals always cover every cascade


def _cascade_where(q: Query, start_ms: int, end_ms: int, exchange: str | None) -> tuple[sql.Composed, list[Any]]:
    where, params = cascade_where(q, start_ms, end_ms)
    if exchange is not None:
        where = sql.SQL("{} AND %s = ANY(c.exchanges)").format(where)
        params.append(exchange)
    return where, params


def cascade_totals(
    pool: ConnectionPool, q: Query, start_ms: int, end_ms: int, exchange: str | None = None
) -> tuple[int, Decimal]:
    """How many cascades the query selects and their USD (all of them, not only the listed ones)."""
    where, params = _cascade_where(q, start_ms, end_ms, exchange)
    query = sql.SQL("SELECT count(*), coalesce(sum(c.value_usd), 0) FROM cascades c WHERE {}").format(where)
    (count, usd), *_ = fetch_all(pool, query, params)
    return int(count), Decimal(usd)


def cascades(
    pool: ConnectionPool,
    q: Query,
    start_ms: int,
    end_ms: int,
    exchange: str | None = None,
    limit: int = CASCADE_LIST_LIMIT,
) -> pd.DataFrame:
    """The newest `limit` cascades overlapping the range, with the price move 15 and 60 minutes after.

    The moves after are measured from the cascade's last price (price_end, else the close of its
    last minute) to the close of the minute 15 / 60 minutes after it ends, on the first of its
    exchanges that has that candle; a missing candle (gap, or not yet happened) gives None.
    """
    where, params = _cascade_where(q, start_ms, end_ms, exchange)
    query = sql.SQL(
        "SELECT c.id, c.symbol, c.side, c.start_time, c.end_time, c.events, c.quantity, c.value_usd, "
        "c.exchanges, c.events_by_exchange, c.cross_exchange, c.peak_minute, c.price_start, c.price_end, "
        "c.price_move_pct, c.risk_score, c.active, c.source, c.usd_by_exchange "
        "FROM cascades c WHERE {} ORDER BY c.start_time DESC, c.id LIMIT %s"
    ).format(where)
    params.append(limit)
    frame = fetch_df(pool, query, params)
    if frame.empty:
        return frame
    frame["duration_s"] = [(e - s).total_seconds() for s, e in zip(frame["start_time"], frame["end_time"], strict=True)]
    closes = _closes_after(pool, frame, q.include_nonlive)
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
    """(cascade id, minutes after its last minute) -> candle close per canonical base unit, for 0,
    15 and 60 minutes.

    A cascade is named after its canonical instrument; its members tell which venue symbols
    (and multipliers: a 1000PEPE close is divided by 1000) hold its candles. One query with
    constant arrays rather than a lookup per cascade: TimescaleDB then skips every candle chunk
    that holds none of the wanted minutes."""
    members = _member_symbols(pool, frame)
    wanted: dict[tuple[str, str, datetime], list[tuple[int, int, Decimal]]] = {}
    order: dict[int, list[str]] = {}
    for cid, end, exchanges in zip(frame["id"], frame["end_time"], frame["exchanges"], strict=True):
        last_minute = utc_datetime(floor_ms(int(end.timestamp() * 1000), MINUTE_MS))
        venues = members.get(int(cid), {})
        order[int(cid)] = [e for e in sorted(exchanges) if e in venues]
        for exchange, (symbol, multiplier) in venues.items():
            for minutes in (0, 15, 60):
                key = (exchange, symbol, last_minute + timedelta(minutes=minutes))
                wanted.setdefault(key, []).append((int(cid), minutes, multiplier))
    if not wanted:
        return {}
    source = sql.SQL("") if include_nonlive else sql.SQL(" AND source = 'live'")
    query = sql.SQL(
        "SELECT exchange, symbol, time, close FROM candles WHERE symbol = ANY(%s) AND time = ANY(%s){}"
    ).format(source)
    symbols = sorted({s for _, s, _ in wanted})
    times = sorted({t for _, _, t in wanted})
    found: dict[tuple[int, int], dict[str, Decimal]] = {}
    for exchange, symbol, t, close in fetch_all(pool, query, [symbols, times]):
        for cid, minutes, multiplier in wanted.get((exchange, symbol, t), []):
            found.setdefault((cid, minutes), {})[exchange] = close / multiplier
    out: dict[tuple[int, int], Decimal] = {}
    for (cid, minutes), closes in found.items():
        # The first of the cascade's exchanges (by name) that has the candle.
        close = next((closes[e] for e in order[cid] if e in closes), None)
        if close is not None:
            out[(cid, minutes)] = close
    return out


def _member_symbols(pool: ConnectionPool, frame: pd.DataFrame) -> dict[int, dict[str, tuple[str, Decimal]]]:
    """cascade id -> exchange -> (venue symbol, multiplier), from the cascades' own members."""
    ids = [int(c) for c in frame["id"]]
    lo = utc_datetime(int(min(frame["start_time"]).timestamp() * 1000))
    hi = utc_datetime(int(max(frame["end_time"]).timestamp() * 1000) + 1)
    rows = fetch_all(
        pool,
        "SELECT DISTINCT cascade_id, exchange, symbol FROM liquidations "
        "WHERE cascade_id = ANY(%s) AND time >= %s AND time <= %s",
        [ids, lo, hi],
    )
    names = dict(zip((int(c) for c in frame["id"]), frame["symbol"], strict=True))
    out: dict[int, dict[str, tuple[str, Decimal]]] = {}
    for cid, exchange, symbol in rows:
        matched = venue_symbols(names[int(cid)], {exchange: [symbol]})
        if exchange in matched:
            out.setdefault(int(cid), {})[exchange] = matched[exchange]
    return out


def _move(base: Decimal | None, after: Decimal | None) -> Decimal | None:
    if not isinstance(base, Decimal) or not isinstance(after, Decimal) or not base:
        return None
    return (after - base) / base * 100


def _objects(values: list[Any], like: pd.DataFrame) -> pd.Series:
    """A column of Decimals (or None) that pandas must not turn into floats."""
    return pd.Series(values, index=like.index, dtype=object)


def cascade_members(pool: ConnectionPool, cascade_id: int, start_ms: int, end_ms: int) -> pd.DataFrame:
    """The liquidations that make up one cascade (between its start and end), oldest first.
    The time bounds let TimescaleDB open only the chunks of those days."""
    query = sql.SQL(
        "SELECT time, exchange, symbol, side, quantity, price, value_usd, source, sampled, event_key "
        "FROM liquidations WHERE cascade_id = %s AND time >= %s AND time <= %s ORDER BY time, event_key"
    )
    return fetch_df(pool, query, [cascade_id, utc_datetime(start_ms), utc_datetime(end_ms)])


def candles_between(
    pool: ConnectionPool, symbols: tuple[str, ...], start_ms: int, end_ms: int, include_nonlive: bool
) -> pd.DataFrame:
    """1-minute candles of venue symbols (a cascade's members', every exchange) in [start, end),
    for zoomed charts."""
    source = sql.SQL("") if include_nonlive else sql.SQL(" AND source = 'live'")
    query = sql.SQL(
        "SELECT time, exchange, open, high, low, close, volume FROM candles "
        "WHERE symbol = ANY(%s) AND time >= %s AND time < %s{} ORDER BY exchange, time"
    ).format(source)
    return fetch_df(pool, query, [list(symbols), utc_datetime(start_ms), utc_datetime(end_ms)])
