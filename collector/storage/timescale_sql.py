"""The SQL of the TimescaleDB writer and the encoders that turn batches into its parameters.

Liquidations go in through `unnest` arrays with `ON CONFLICT DO NOTHING RETURNING`, and the
returned rows (only those really inserted) feed the rollup upserts in the same statement: the
minute rollup always, and the hour, day and whole-market hour rollups only for rows older than
`rollup_fold.folded_through` (newer hours are folded from the minutes once they close:
db/migrations/0018, db/rollups.py). So the rollups, read through their `_all` views, always equal
an aggregate over the raw rows, however often a batch is re-delivered or replayed. Candles,
cascades and stream coverage are upserts; earlier cascade members are flagged with an UPDATE.
Pure functions only: the writer (`timescale.py`) owns the connections.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from common.events import Candle, Cascade, Liquidation, Side, StreamStatus, ms_to_datetime
from db import rollups

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_HOUR_MS = 3_600_000
# Rows per INSERT statement: a transaction holds several, so building one never blocks the event
# loop for long (the router keeps feeding Redis meanwhile).
STATEMENT_ROWS = 2_000

# Arrays travel as text literals built in Python (`_array`): much cheaper than adapting every
# Decimal and datetime one by one; times travel as epoch milliseconds and convert exactly in SQL.
_INSERT_RAW = """
WITH ins AS (
    INSERT INTO liquidations (time, exchange, symbol, side, quantity, price, value_usd, raw_side,
                              received_at, source, sampled, cascade_id, event_key)
    SELECT 'epoch'::timestamptz + t * interval '1 millisecond', exchange, symbol, side, quantity, price,
           value_usd, raw_side, 'epoch'::timestamptz + r * interval '1 millisecond', source, sampled,
           cascade_id, event_key
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::numeric[], %s::numeric[],
                %s::numeric[], %s::text[], %s::bigint[], %s::text[], %s::boolean[], %s::bigint[], %s::bigint[])
         AS u(t, exchange, symbol, side, quantity, price, value_usd, raw_side, r, source, sampled, cascade_id, event_key)
    ON CONFLICT DO NOTHING
    RETURNING time, exchange, symbol, side, source, quantity, value_usd
)"""
# The writer's first statement in a transaction with liquidations: the fold (db/rollups.py `FOLD`)
# cannot move the line between the rows this transaction writes and its commit.
LOCK_FOLD = "SELECT folded_through FROM rollup_fold FOR SHARE"
# The rows the hour, day and market-hour rollups take now: those before the line (held by LOCK_FOLD).
_FOLDED = """, folded AS (
    SELECT * FROM ins WHERE time < (SELECT folded_through FROM rollup_fold)
)"""
# One upsert per rollup of db/rollups.py (per symbol: minute, hour, day), from the inserted rows only.
_SYMBOL_ROLLUP = """, {name} AS (
    INSERT INTO {table} AS r (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
    SELECT time_bucket('{width}', time), exchange, symbol, side, source, count(*), sum(quantity),
           sum(value_usd), max(value_usd)
    FROM {rows} GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket, exchange, symbol, side, source) DO UPDATE
    SET events = r.events + EXCLUDED.events, quantity = r.quantity + EXCLUDED.quantity,
        value_usd = r.value_usd + EXCLUDED.value_usd,
        max_value_usd = GREATEST(r.max_value_usd, EXCLUDED.max_value_usd)
    RETURNING 1
)"""
_MARKET_ROLLUP = """, market AS (
    INSERT INTO liquidations_market_1h AS r (bucket, exchange, side, source, events, value_usd, max_value_usd)
    SELECT time_bucket('1 hour', time), exchange, side, source, count(*), sum(value_usd), max(value_usd)
    FROM {rows} GROUP BY 1, 2, 3, 4
    ON CONFLICT (bucket, exchange, side, source) DO UPDATE
    SET events = r.events + EXCLUDED.events, value_usd = r.value_usd + EXCLUDED.value_usd,
        max_value_usd = GREATEST(r.max_value_usd, EXCLUDED.max_value_usd)
    RETURNING 1
)"""
INSERT_LIQUIDATIONS = (
    _INSERT_RAW
    + _FOLDED
    + "".join(
        _SYMBOL_ROLLUP.format(name=f"r{i}", table=table, width=width, rows="ins" if i == 0 else "folded")
        for i, (table, width) in enumerate(rollups.SYMBOL_ROLLUPS)
    )
    + _MARKET_ROLLUP.format(rows="folded")
    + "\nSELECT count(*) FROM ins\n"
)

UPSERT_CANDLES = """
INSERT INTO candles (time, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source)
SELECT 'epoch'::timestamptz + t * interval '1 millisecond', exchange, symbol, open, high, low, close, volume,
       quote_volume, closed, source
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[],
            %s::numeric[], %s::numeric[], %s::boolean[], %s::text[])
     AS u(t, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source)
ON CONFLICT (exchange, symbol, time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, closed = EXCLUDED.closed,
    source = EXCLUDED.source
"""

# Every hour a candle batch touched, recomputed from all its minutes (after the minute upsert, in
# the same transaction), so candles_1h always equals an aggregate of `candles`. `source` is 'live'
# only when every minute is live: the app recomputes other hours from their live minutes.
# The constant time bounds let the planner skip every chunk outside the batch.
UPSERT_CANDLES_1H = """
INSERT INTO candles_1h (time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source)
SELECT u.hour, u.exchange, u.symbol, first(c.open, c.time), max(c.high), min(c.low), last(c.close, c.time),
       sum(c.volume), sum(c.quote_volume), count(*),
       CASE WHEN bool_and(c.source = 'live') THEN 'live' ELSE min(c.source) FILTER (WHERE c.source <> 'live') END
FROM (SELECT exchange, symbol, 'epoch'::timestamptz + h * interval '1 millisecond' AS hour
      FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS x(exchange, symbol, h)) AS u
JOIN candles AS c ON c.exchange = u.exchange AND c.symbol = u.symbol
                 AND c.time >= u.hour AND c.time < u.hour + interval '1 hour'
WHERE c.time >= %s AND c.time < %s
GROUP BY u.hour, u.exchange, u.symbol
ON CONFLICT (exchange, symbol, time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, minutes = EXCLUDED.minutes,
    source = EXCLUDED.source
"""

MINUTE_USD = """
SELECT exchange, symbol, (extract(epoch FROM bucket) * 1000)::bigint, sum(value_usd)
FROM liquidations_1m
WHERE bucket >= %s AND bucket < %s AND source = ANY(%s)
GROUP BY exchange, symbol, bucket
"""

# Every cascade a batch changed in one statement (arrays, as the liquidations): a whole-market burst
# changes hundreds a second. `exchanges` and the JSON columns travel as one text literal per row.
UPSERT_CASCADES = """
INSERT INTO cascades (id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges,
                      events_by_exchange, cross_exchange, peak_minute, price_start, price_end,
                      price_move_pct, risk_score, active, source, usd_by_exchange)
SELECT id, symbol, side, 'epoch'::timestamptz + s * interval '1 millisecond',
       'epoch'::timestamptz + e * interval '1 millisecond', events, quantity, value_usd, exchanges::text[],
       counts::jsonb, cross_exchange, 'epoch'::timestamptz + peak * interval '1 millisecond', price_start,
       price_end, move, risk_score, active, source, usd::jsonb
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::integer[], %s::numeric[],
            %s::numeric[], %s::text[], %s::text[], %s::boolean[], %s::bigint[], %s::numeric[], %s::numeric[],
            %s::numeric[], %s::integer[], %s::boolean[], %s::text[], %s::text[])
     AS u(id, symbol, side, s, e, events, quantity, value_usd, exchanges, counts, cross_exchange, peak,
          price_start, price_end, move, risk_score, active, source, usd)
ON CONFLICT (id) DO UPDATE
SET start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, events = EXCLUDED.events,
    quantity = EXCLUDED.quantity, value_usd = EXCLUDED.value_usd, exchanges = EXCLUDED.exchanges,
    events_by_exchange = EXCLUDED.events_by_exchange, cross_exchange = EXCLUDED.cross_exchange,
    peak_minute = EXCLUDED.peak_minute, price_start = EXCLUDED.price_start, price_end = EXCLUDED.price_end,
    price_move_pct = EXCLUDED.price_move_pct, risk_score = EXCLUDED.risk_score, active = EXCLUDED.active,
    usd_by_exchange = EXCLUDED.usd_by_exchange
"""

# Times as epoch ms; the constant bounds let the planner skip every chunk outside the flags' times.
FLAG_MEMBERS = """
UPDATE liquidations AS l SET cascade_id = u.id
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS u(id, key, t)
WHERE l.event_key = u.key AND l.time = 'epoch'::timestamptz + u.t * interval '1 millisecond'
  AND l.time >= %s AND l.time <= %s AND l.cascade_id IS DISTINCT FROM u.id
"""

UPSERT_COVERAGE = """
INSERT INTO stream_coverage AS s (connection_id, exchange, symbols, source, connected_at, last_seen_at,
                                  disconnected_at, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (connection_id) DO UPDATE
SET last_seen_at = GREATEST(s.last_seen_at, EXCLUDED.last_seen_at),
    disconnected_at = COALESCE(s.disconnected_at, EXCLUDED.disconnected_at),
    reason = CASE WHEN s.disconnected_at IS NULL AND EXCLUDED.disconnected_at IS NOT NULL
                  THEN EXCLUDED.reason ELSE s.reason END
"""

# What a killed process left open ends at its last heartbeat, or later at the last event it stored
# from that exchange after that heartbeat (its spool is replayed before this runs): stored data is
# never shown inside a gap. Events received since this process started are not the killed one's.
CLOSE_STALE = """
UPDATE stream_coverage AS s
SET disconnected_at = GREATEST(s.last_seen_at, (
        SELECT GREATEST(max(l.time), max(l.received_at)) FROM liquidations AS l
        WHERE l.exchange = s.exchange AND l.source = s.source
          AND l.time > s.last_seen_at AND l.time < %(before)s AND l.received_at < %(before)s)),
    reason = 'collector stopped'
WHERE s.disconnected_at IS NULL AND NOT (s.connection_id = ANY(%(own)s::text[]))
  AND s.last_seen_at < %(stale)s  -- another collector's live rows are refreshed every few seconds
"""

# A new leader's view of what its predecessor left active (CascadeDetector.adopt).
ACTIVE_CASCADES = """
SELECT id, symbol, side, start_time, end_time, events, quantity, value_usd, events_by_exchange, peak_minute,
       price_start, price_end, risk_score, active, source, usd_by_exchange
FROM cascades WHERE active
"""
CASCADE_LATE_MS = 600_000  # members precede a cascade's recorded start by at most a window (a lagging socket)
CASCADE_MEMBERS = """
SELECT time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source, sampled,
       cascade_id, event_key
FROM liquidations WHERE cascade_id = ANY(%s::bigint[]) AND time >= %s
"""

END_STALE_CASCADES = """
UPDATE cascades SET active = false WHERE active AND NOT (id = ANY(%s::bigint[]))
"""


def to_ms(t: datetime) -> int:
    return (t - _EPOCH) // _MS


def unique_liquidations(events: list[Liquidation]) -> list[Liquidation]:
    """One row per (key, time): the first wins (it carries the cascade id, duplicates do not)."""
    seen: dict[tuple[int, int], Liquidation] = {}
    for ev in events:
        seen.setdefault((ev.key, ev.time_ms), ev)
    return list(seen.values())


def last_candles(candles: list[Candle]) -> list[Candle]:
    """The latest update per minute: an upsert may not touch one row twice in a statement."""
    last: dict[tuple[str, str, int], Candle] = {}
    for c in candles:
        last[(c.exchange, c.symbol, c.open_ms)] = c
    return list(last.values())


def merge_statuses(statuses: list[StreamStatus]) -> list[tuple[Any, ...]]:
    """One coverage row per connection for this batch (first and last times, the close if any)."""
    rows: dict[str, list[Any]] = {}
    for s in statuses:
        at = ms_to_datetime(s.at_ms)
        row = rows.get(s.connection_id)
        if row is None:
            row = [s.connection_id, s.exchange, list(s.symbols), s.source, at, at, None, ""]
            rows[s.connection_id] = row
        row[4] = min(row[4], at)
        row[5] = max(row[5], at)
        if s.state == "disconnected" and row[6] is None:
            row[6] = at
            row[7] = s.reason
    return [tuple(r) for r in rows.values()]


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers (ints, Decimals): their str() is valid input."""
    return "{" + ",".join(map(str, values)) + "}"


def _nullable_array(values: Iterable[int | Decimal | None]) -> str:
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _bool_array(values: Iterable[bool]) -> str:
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


def _text_array(values: list[str]) -> str:
    """A PostgreSQL array literal of strings, each quoted and escaped once per distinct value."""
    quoted = {v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in set(values)}
    return "{" + ",".join(map(quoted.__getitem__, values)) + "}"


def liquidation_arrays(liqs: list[Liquidation]) -> tuple[str, ...]:
    return (
        _array(e.time_ms for e in liqs),
        _text_array([e.exchange for e in liqs]),
        _text_array([e.symbol for e in liqs]),
        _text_array([e.side.value for e in liqs]),
        _array(e.quantity for e in liqs),
        _array(e.price for e in liqs),
        _array(e.value_usd for e in liqs),
        _text_array([e.raw_side for e in liqs]),
        _array(e.received_ms for e in liqs),
        _text_array([e.source for e in liqs]),
        _bool_array(e.sampled for e in liqs),
        _nullable_array(e.cascade_id for e in liqs),
        _array(e.key for e in liqs),
    )


def candle_arrays(candles: list[Candle]) -> tuple[str, ...]:
    """UPSERT_CANDLES' parameters as array literals (the whole market's open minutes every 5 s)."""
    return (
        _array(c.open_ms for c in candles),
        _text_array([c.exchange for c in candles]),
        _text_array([c.symbol for c in candles]),
        _array(c.open for c in candles),
        _array(c.high for c in candles),
        _array(c.low for c in candles),
        _array(c.close for c in candles),
        _array(c.volume for c in candles),
        _array(c.quote_volume for c in candles),
        _bool_array(c.closed for c in candles),
        _text_array([c.source for c in candles]),
    )


def candle_hours(candles: list[Candle]) -> tuple[Any, ...]:
    """The (exchange, symbol, hour) keys a batch touched as arrays, plus the hours' overall bounds."""
    keys = sorted({(c.exchange, c.symbol, c.open_ms // _HOUR_MS * _HOUR_MS) for c in candles}, key=lambda k: k[2])
    return (
        _text_array([k[0] for k in keys]),
        _text_array([k[1] for k in keys]),
        _array(k[2] for k in keys),
        ms_to_datetime(keys[0][2]),
        ms_to_datetime(keys[-1][2] + _HOUR_MS),
    )


def flag_arrays(flags: list[tuple[int, int, int]]) -> tuple[object, ...]:
    """FLAG_MEMBERS' parameters for (cascade id, event key, time ms) flags: a market-wide wave of
    cascade starts flags thousands of members in a second, so array literals, not Python lists."""
    times = [f[2] for f in flags]
    return (
        _array(f[0] for f in flags),
        _array(f[1] for f in flags),
        _array(times),
        ms_to_datetime(min(times)),
        ms_to_datetime(max(times)),
    )


def cascade_arrays(cascades: list[Cascade]) -> tuple[str, ...]:
    """UPSERT_CASCADES' parameters: the same values as `cascade_row`, one array literal a column
    (ids unique: one statement cannot update a row twice)."""
    moves = [c.price_move_pct for c in cascades]
    return (
        _array(c.id for c in cascades),
        _text_array([c.symbol for c in cascades]),
        _text_array([str(c.side) for c in cascades]),
        _array(c.start_ms for c in cascades),
        _array(c.end_ms for c in cascades),
        _array(c.count for c in cascades),
        _array(c.quantity for c in cascades),
        _array(c.value_usd for c in cascades),
        _text_array([_text_array(list(c.exchanges)) for c in cascades]),
        _text_array([json.dumps(c.counts) for c in cascades]),
        _bool_array(c.cross_exchange for c in cascades),
        _nullable_array(c.peak_minute_ms or None for c in cascades),
        _nullable_array(c.price_start for c in cascades),
        _nullable_array(c.price_end for c in cascades),
        _nullable_array(None if m is None else round(m, 6) for m in moves),
        _array(c.risk_score for c in cascades),
        _bool_array(c.active for c in cascades),
        _text_array([c.source for c in cascades]),
        _text_array([json.dumps({k: f"{v:f}" for k, v in c.usd.items()}) for c in cascades]),
    )


def cascade_row(c: Cascade) -> tuple[Any, ...]:
    move = c.price_move_pct
    return (
        c.id,
        c.symbol,
        str(c.side),
        ms_to_datetime(c.start_ms),
        ms_to_datetime(c.end_ms),
        c.count,
        c.quantity,
        c.value_usd,
        list(c.exchanges),
        Jsonb(c.counts),
        c.cross_exchange,
        ms_to_datetime(c.peak_minute_ms) if c.peak_minute_ms else None,
        c.price_start,
        c.price_end,
        None if move is None else round(move, 6),
        c.risk_score,
        c.active,
        c.source,
        Jsonb({k: f"{v:f}" for k, v in c.usd.items()}),
    )


def liquidation_from_row(r: tuple[Any, ...]) -> Liquidation:
    return Liquidation(
        exchange=r[1],
        symbol=r[2],
        side=Side(r[3]),
        quantity=r[4],
        price=r[5],
        value_usd=r[6],
        time_ms=to_ms(r[0]),
        received_ms=to_ms(r[8]),
        raw_side=r[7],
        source=r[9],
        sampled=r[10],
        key=r[12],
        cascade_id=r[11],
    )


def cascade_from_row(r: tuple[Any, ...]) -> Cascade:
    return Cascade(
        id=r[0],
        symbol=r[1],
        side=Side(r[2]),
        start_ms=to_ms(r[3]),
        end_ms=to_ms(r[4]),
        count=r[5],
        quantity=r[6],
        value_usd=r[7],
        counts={k: int(v) for k, v in r[8].items()},
        peak_minute_ms=0 if r[9] is None else to_ms(r[9]),
        price_start=r[10],
        price_end=r[11],
        risk_score=r[12],
        active=r[13],
        source=r[14],
        usd={k: Decimal(v) for k, v in r[15].items()},
    )
