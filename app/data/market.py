"""The market overview: every venue and symbol of one window (1, 4, 12 or 24 h), summed per side,
per venue and per coin, with the previous window of the same length and the latest large liquidations.

Where the figures come from, all exact (equal to the same sums over the raw rows):
- the 1-hour window from the Redis live view: the collector's per-symbol sums of the 10-second
  buckets inside [end - 1 h, end), plus the raw members of the two partial buckets at its edges
  (the same bounded read as app/data/live.py, per symbol instead of per selection); the feed reads
  the newest members of `live:liqs` (at most MAX_SCAN). When the view is not built yet
  (`live:built:v2` missing) or Redis cannot be reached, the window is read from TimescaleDB instead
  and `MarketOverview.source` says so.
- longer windows, and every previous window, from the rollups (`liquidations_1h` in the middle,
  `liquidations_1m` around it) plus the raw rows of the open minutes at both edges
  (app.data.history.segments); the feed from the raw table (newest first, at most FEED_ROWS).

Coins are canonical base assets: the `instruments` table where it lists the venue symbol, else
`common.instruments.guess_instrument` (so `1000PEPEUSDT` and `PEPE-USDT-SWAP` are both PEPE).
No Streamlit here: the page caches `market_overview`, and the CLI calls it directly.
Errors: storage failures of TimescaleDB raise DataUnavailable (app.data.connections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

import redis
from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.connections import DataUnavailable, fetch_all, redis_errors
from app.data.rows import fold_line, segments, to_ms, ts
from common.instruments import guess_instrument
from common.live_view import (
    BUCKET_MS,
    Keys,
    decode_liquidation,
    group_of_text,
    limbs_to_decimal,
    symbol_of_text,
)

HOUR_MS = 3_600_000
WINDOWS: tuple[int, ...] = (1, 4, 12, 24)  # hours
LIVE_HOURS = 1  # windows up to this long are read from Redis
FEED_ROWS = 50
MAX_SCAN = 10_000  # Redis members read at most for the feed
# Per-symbol bucket hashes read at most for the coins of the live hour (about 0.5 s of reading);
# a busier hour takes its coins from TimescaleDB (MarketOverview.coins_source says so).
MAX_SYMBOL_KEYS = 4_000
_PAGE = 500
_PRECISION = 120  # exact sums of exact amounts
SIDES = ("LONG", "SHORT")


@dataclass(frozen=True)
class SideTotal:
    events: int = 0
    usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class VenueRow:
    exchange: str
    events: int
    usd: Decimal


@dataclass(frozen=True)
class CoinRow:
    """One canonical base asset, summed over its contracts and venues."""

    coin: str
    long_events: int
    long_usd: Decimal
    short_events: int
    short_usd: Decimal
    largest_usd: Decimal | None  # the largest single liquidation
    previous_usd: Decimal  # the same coin in the previous window of the same length
    symbol: str  # the venue symbol with the most USD in the window (for links)
    exchange: str  # its venue
    symbols: tuple[str, ...]  # every venue symbol of the coin seen in the window

    @property
    def events(self) -> int:
        return self.long_events + self.short_events

    @property
    def usd(self) -> Decimal:
        return self.long_usd + self.short_usd

    @property
    def long_share(self) -> Decimal:
        """0..1: the share of the coin's USD that liquidated longs (0.5 when empty)."""
        return self.long_usd / self.usd if self.usd else Decimal("0.5")

    @property
    def change_pct(self) -> Decimal | None:
        """Change of USD against the previous window, in %; None: new (nothing before)."""
        if not self.previous_usd:
            return None
        return (self.usd - self.previous_usd) / self.previous_usd * 100


@dataclass(frozen=True)
class FeedRow:
    time_ms: int
    exchange: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    value_usd: Decimal


@dataclass(frozen=True)
class MarketOverview:
    hours: int
    start_ms: int
    end_ms: int  # the window is [start_ms, end_ms); the previous one [2 * start - end, start)
    exchanges: tuple[str, ...]
    include_nonlive: bool
    source: str  # "redis" or "timescaledb" (with the reason when Redis was meant to be used)
    coins_source: str  # the same for the per-coin rows (TimescaleDB when the live hour has too many symbols)
    long: SideTotal
    short: SideTotal
    previous_usd: Decimal
    venues: tuple[VenueRow, ...]  # every selected venue, most USD first
    coins: tuple[CoinRow, ...]  # most USD first
    feed_min_usd: Decimal
    feed: tuple[FeedRow, ...]  # newest first, at most FEED_ROWS, value_usd >= feed_min_usd
    feed_complete: bool = True  # False: the Redis scan stopped at MAX_SCAN members

    @property
    def events(self) -> int:
        return self.long.events + self.short.events

    @property
    def usd(self) -> Decimal:
        return self.long.usd + self.short.usd

    @property
    def previous_start_ms(self) -> int:
        return 2 * self.start_ms - self.end_ms

    @property
    def largest_usd(self) -> Decimal | None:
        found = [c.largest_usd for c in self.coins if c.largest_usd is not None]
        return max(found) if found else None


@dataclass
class _Acc:
    """Sums of one (exchange, symbol, side)."""

    events: int = 0
    usd: Decimal = Decimal(0)
    largest: Decimal | None = None

    def add(self, events: int, usd: Decimal, largest: Decimal | None) -> None:
        self.events += int(events)
        self.usd += usd
        if largest is not None and (self.largest is None or largest > self.largest):
            self.largest = largest


_Sums = dict[tuple[str, str, str], _Acc]  # (exchange, symbol, side) -> sums


# --- TimescaleDB -------------------------------------------------------------------------------


def _filter(exchanges: tuple[str, ...], include_nonlive: bool) -> tuple[sql.Composable, list[Any]]:
    live = sql.SQL("") if include_nonlive else sql.SQL(" AND source = 'live'")
    return sql.SQL("exchange = ANY(%s){}").format(live), [list(exchanges)]


def _db_sums(
    pool: ConnectionPool, windows: list[tuple[int, int]], exchanges: tuple[str, ...], include_nonlive: bool
) -> list[_Sums]:
    """Per window, sums per (exchange, symbol, side): one query, rollups plus raw edge minutes."""
    where, where_params = _filter(exchanges, include_nonlive)
    line = fold_line(pool)
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for index, (start, end) in enumerate(windows):
        for table, lo, hi in segments(start, end, line_ms=line):
            raw = table == "liquidations"
            col = sql.Identifier("time" if raw else "bucket")
            aggregates = (
                sql.SQL("count(*) AS n, sum(value_usd) AS usd, max(value_usd) AS largest")
                if raw
                else sql.SQL("sum(events) AS n, sum(value_usd) AS usd, max(max_value_usd) AS largest")
            )
            parts.append(
                sql.SQL(
                    "SELECT %s::int AS w, exchange, symbol, side, {agg} FROM {table} "
                    "WHERE {col} >= %s AND {col} < %s AND {where} GROUP BY exchange, symbol, side"
                ).format(agg=aggregates, table=sql.Identifier(table), col=col, where=where)
            )
            params += [index, ts(lo), ts(hi), *where_params]
    out: list[_Sums] = [{} for _ in windows]
    if not parts:
        return out
    query = sql.SQL(
        # Named columns: a UNION takes its names from its first part, a raw or a rollup segment.
        "SELECT w, exchange, symbol, side, sum(n)::bigint, sum(usd), max(largest) FROM ({}) s GROUP BY 1, 2, 3, 4"
    ).format(sql.SQL(" UNION ALL ").join(parts))
    for w, exchange, symbol, side, events, usd, largest in fetch_all(pool, query, params):
        out[w].setdefault((exchange, symbol, side), _Acc()).add(events, usd, largest)
    return out


# The feed: the hours holding a large enough liquidation, from the market's hourly rollup (it covers the open
# hour too), then the raw rows of those hours, newest hour first, until FEED_ROWS are found. A high
# threshold never scans the raw rows of hours without such a liquidation.
_FEED_HOURS = sql.SQL(
    "SELECT bucket FROM liquidations_market_1h_all WHERE bucket >= %s AND bucket < %s AND {} AND max_value_usd >= %s "
    "GROUP BY bucket ORDER BY bucket DESC"
)
_FEED_ROWS = sql.SQL(
    "SELECT time, exchange, symbol, side, quantity, price, value_usd FROM liquidations "
    "WHERE time >= %s AND time < %s AND {} AND value_usd >= %s ORDER BY time DESC, value_usd DESC LIMIT %s"
)


def _db_feed(
    pool: ConnectionPool, start: int, end: int, exchanges: tuple[str, ...], include_nonlive: bool, min_usd: Decimal
) -> list[FeedRow]:
    where, params = _filter(exchanges, include_nonlive)
    hours = fetch_all(pool, _FEED_HOURS.format(where), [ts(start - start % HOUR_MS), ts(end), *params, min_usd])
    rows: list[tuple[Any, ...]] = []
    query = _FEED_ROWS.format(where)
    for (hour,) in hours:
        lo, hi = max(start, to_ms(hour)), min(end, to_ms(hour) + HOUR_MS)
        rows += fetch_all(pool, query, [ts(lo), ts(hi), *params, min_usd, FEED_ROWS - len(rows)])
        if len(rows) >= FEED_ROWS:
            break
    return [
        FeedRow(to_ms(t), exchange, symbol, side, quantity, price, usd)
        for t, exchange, symbol, side, quantity, price, usd in rows
    ]


def _coins_of(pool: ConnectionPool, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(exchange, symbol) -> canonical base: the instruments table where it lists the symbol, else a guess."""
    out = {pair: guess_instrument(*pair).base for pair in pairs}
    if pairs:
        rows = fetch_all(
            pool,
            "SELECT exchange, symbol, base FROM instruments WHERE symbol = ANY(%s) AND exchange = ANY(%s)",
            [sorted({s for _e, s in pairs}), sorted({e for e, _s in pairs})],
        )
        for exchange, symbol, base in rows:
            if (exchange, symbol) in out and base:
                out[(exchange, symbol)] = base
    return out


# --- Redis ---------------------------------------------------------------------------------------


@dataclass
class _Limbs:
    events: int = 0
    usd: dict[int, int] = field(default_factory=dict)
    largest: Decimal | None = None


def _fold(raw: dict[bytes, bytes], symbol: str, wanted: set[str], include_nonlive: bool, into: _Groups) -> None:
    """Add one aggregate hash (fields `<group><kind>`, see common.live_view) to `into`."""
    for f, value in raw.items():
        cut = f.rfind(b"]") + 1
        kind = f[cut:]
        if kind[:1] == b"q":
            continue  # base quantities: coins do not add up
        exchange, side, source = group_of_text(f[:cut])
        if exchange not in wanted or not (include_nonlive or source == "live"):
            continue
        g = into.setdefault((exchange, symbol, side), _Limbs())
        if kind == b"n":
            g.events += int(value)
        elif kind == b"x":
            largest = Decimal(value.decode())
            g.largest = largest if g.largest is None or largest > g.largest else g.largest
        else:
            k = int(kind[1:])
            g.usd[k] = g.usd.get(k, 0) + int(value)


_Groups = dict[tuple[str, str, str], _Limbs]


def _sums_of(groups: _Groups, edges: list[dict[str, Any]], per_symbol: bool) -> _Sums:
    out: _Sums = {}
    with localcontext(prec=_PRECISION):
        for key, g in groups.items():
            if g.events:
                out.setdefault(key, _Acc()).add(g.events, limbs_to_decimal(g.usd), g.largest)
        for ev in edges:
            key = (ev["exchange"], ev["symbol"] if per_symbol else "", str(ev["side"]))
            out.setdefault(key, _Acc()).add(1, ev["value_usd"], ev["value_usd"])
    return out


def _redis_sums(
    client: redis.Redis, keys: Keys, start: int, end: int, exchanges: tuple[str, ...], include_nonlive: bool
) -> tuple[_Sums, _Sums | None] | None:
    """Sums over [start, end) from the live view: per (exchange, "", side) from the all-symbol bucket
    hashes, and per (exchange, symbol, side) from the per-symbol ones when the window holds at most
    MAX_SYMBOL_KEYS of them (else None: the caller reads the coins from TimescaleDB). None when the
    view is not built."""
    lo, hi = start, end - 1
    first = -(-lo // BUCKET_MS) * BUCKET_MS
    last = max(first, (hi + 1) // BUCKET_MS * BUCKET_MS)  # buckets [first, last) lie inside [lo, hi]
    buckets = range(first, last, BUCKET_MS)
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        pipe.exists(keys.built)
        pipe.zcount(keys.agg_keys, first, last - 1)
        pipe.zrangebyscore(keys.liqs, lo, first - 1)
        pipe.zrangebyscore(keys.liqs, last, hi)
        for b in buckets:
            pipe.hgetall(keys.agg_key(b))
        built, n_keys, low_edge, high_edge, *hashes = pipe.execute()
        if not built:
            return None
        per_symbol: list[str] = []
        symbol_hashes: list[dict[bytes, bytes]] = []
        # The registry lists both kinds of keys: all-symbol ones exist for the buckets that hold any event.
        symbol_keys = n_keys - sum(1 for h in hashes if h)
        if symbol_keys <= MAX_SYMBOL_KEYS:
            suffixes = client.zrangebyscore(keys.agg_keys, first, last - 1)
            per_symbol = [s.decode() for s in suffixes if b":" in s]
            pipe = client.pipeline(transaction=False)
            for suffix in per_symbol:
                pipe.hgetall(keys.agg + suffix)
            symbol_hashes = pipe.execute()
    wanted = set(exchanges)
    edges = [
        ev
        for ev in map(decode_liquidation, (*low_edge, *high_edge))
        if ev["exchange"] in wanted and (include_nonlive or ev["source"] == "live")
    ]
    totals: _Groups = {}
    for raw in hashes:
        _fold(raw, "", wanted, include_nonlive, totals)
    if symbol_keys > MAX_SYMBOL_KEYS:
        return _sums_of(totals, edges, per_symbol=False), None
    groups: _Groups = {}
    for suffix, raw in zip(per_symbol, symbol_hashes, strict=True):
        _fold(raw, symbol_of_text(suffix.partition(":")[2]), wanted, include_nonlive, groups)
    return _sums_of(totals, edges, per_symbol=False), _sums_of(groups, edges, per_symbol=True)


def _redis_feed(
    client: redis.Redis,
    keys: Keys,
    start: int,
    end: int,
    exchanges: tuple[str, ...],
    include_nonlive: bool,
    min_usd: Decimal,
) -> tuple[list[FeedRow], bool]:
    """The newest FEED_ROWS members of at least `min_usd`, newest first; False when MAX_SCAN stopped it.

    Pages go down by score (keyset, skipping the members already read at the last score)."""
    wanted = set(exchanges)
    rows: list[FeedRow] = []
    read = skip = 0
    last = float(end)  # members are scored by exchange time; the window is [start, end)
    top: float | str = f"({end}"
    while True:
        with redis_errors():
            page = client.zrevrangebyscore(keys.liqs, top, start, start=skip, num=_PAGE, withscores=True)
        read += len(page)
        for member, _score in page:
            ev = decode_liquidation(member)
            if ev["exchange"] in wanted and (include_nonlive or ev["source"] == "live") and ev["value_usd"] >= min_usd:
                rows.append(
                    FeedRow(
                        ev["time_ms"],
                        ev["exchange"],
                        ev["symbol"],
                        str(ev["side"]),
                        ev["quantity"],
                        ev["price"],
                        ev["value_usd"],
                    )
                )
                if len(rows) == FEED_ROWS:
                    return rows, True
        if len(page) < _PAGE:
            return rows, True
        if read >= MAX_SCAN:
            return rows, False
        score = page[-1][1]
        seen = sum(1 for _m, s in page if s == score)
        skip = skip + seen if score == last else seen
        last = score
        top = score


# --- The overview --------------------------------------------------------------------------------


def _overview(
    hours: int,
    start: int,
    end: int,
    exchanges: tuple[str, ...],
    include_nonlive: bool,
    source: str,
    coins_source: str,
    totals: _Sums,
    current: _Sums,
    previous: _Sums,
    coin_of: dict[tuple[str, str], str],
    feed_min_usd: Decimal,
    feed: list[FeedRow],
    feed_complete: bool,
) -> MarketOverview:
    sides = {s: _Acc() for s in SIDES}
    venues = {e: _Acc() for e in exchanges}
    coins: dict[str, dict[str, _Acc]] = {}  # coin -> LONG, SHORT, previous (usd only)
    by_symbol: dict[tuple[str, str], Decimal] = {}
    for (exchange, _symbol, side), acc in totals.items():
        sides.setdefault(side, _Acc()).add(acc.events, acc.usd, acc.largest)
        venues.setdefault(exchange, _Acc()).add(acc.events, acc.usd, acc.largest)
    for (exchange, symbol, side), acc in current.items():
        c = coins.setdefault(coin_of[(exchange, symbol)], {"LONG": _Acc(), "SHORT": _Acc(), "previous": _Acc()})
        c.setdefault(side, _Acc()).add(acc.events, acc.usd, acc.largest)
        by_symbol[(exchange, symbol)] = by_symbol.get((exchange, symbol), Decimal(0)) + acc.usd
    for (exchange, symbol, _side), acc in previous.items():
        coin = coin_of[(exchange, symbol)]
        if coin in coins:
            coins[coin]["previous"].add(acc.events, acc.usd, acc.largest)
    top: dict[str, tuple[Decimal, str, str]] = {}
    symbols: dict[str, set[str]] = {}
    for (exchange, symbol), usd in by_symbol.items():
        coin = coin_of[(exchange, symbol)]
        symbols.setdefault(coin, set()).add(symbol)
        best = top.get(coin)
        # Most USD wins; ties go to the shorter (plainer) symbol, then alphabetical: stable links.
        if best is None or (usd, -len(symbol), best[1]) > (best[0], -len(best[1]), symbol):
            top[coin] = (usd, symbol, exchange)
    coin_rows = []
    for coin, c in coins.items():
        largest = [a.largest for k, a in c.items() if k != "previous" and a.largest is not None]
        coin_rows.append(
            CoinRow(
                coin=coin,
                long_events=c["LONG"].events,
                long_usd=c["LONG"].usd,
                short_events=c["SHORT"].events,
                short_usd=c["SHORT"].usd,
                largest_usd=max(largest) if largest else None,
                previous_usd=c["previous"].usd,
                symbol=top[coin][1],
                exchange=top[coin][2],
                symbols=tuple(sorted(symbols[coin])),
            )
        )
    coin_rows.sort(key=lambda r: (-r.usd, r.coin))
    venue_rows = sorted((VenueRow(e, a.events, a.usd) for e, a in venues.items()), key=lambda v: (-v.usd, v.exchange))
    return MarketOverview(
        hours=hours,
        start_ms=start,
        end_ms=end,
        exchanges=exchanges,
        include_nonlive=include_nonlive,
        source=source,
        coins_source=coins_source,
        long=SideTotal(sides["LONG"].events, sides["LONG"].usd),
        short=SideTotal(sides["SHORT"].events, sides["SHORT"].usd),
        previous_usd=sum((acc.usd for acc in previous.values()), Decimal(0)),
        venues=tuple(venue_rows),
        coins=tuple(coin_rows),
        feed_min_usd=feed_min_usd,
        feed=tuple(feed),
        feed_complete=feed_complete,
    )


def market_overview(
    pool: ConnectionPool,
    redis_client: redis.Redis | None,
    prefix: str,
    hours: int,
    now_ms: int,
    exchanges: tuple[str, ...],
    include_nonlive: bool,
    feed_min_usd: Decimal | int,
) -> MarketOverview:
    """The overview of [now - hours, now) and the window before it; see the module docstring."""
    if hours < 1:
        raise ValueError(f"hours must be at least 1, got {hours}")
    min_usd = Decimal(feed_min_usd)
    end, start = now_ms, now_ms - hours * HOUR_MS
    previous = (start - hours * HOUR_MS, start)
    live: tuple[_Sums, _Sums | None] | None = None
    source = "timescaledb"
    feed: list[FeedRow] = []
    complete = True
    if hours <= LIVE_HOURS and redis_client is not None:
        keys = Keys(prefix)
        try:
            live = _redis_sums(redis_client, keys, start, end, exchanges, include_nonlive)
            if live is None:
                source = "timescaledb (the Redis live view is not built yet)"
            else:
                source = "redis"
                feed, complete = _redis_feed(redis_client, keys, start, end, exchanges, include_nonlive, min_usd)
        except DataUnavailable as exc:
            live, source = None, f"timescaledb ({exc})"
    coins_source = source
    if live is not None and live[1] is not None:
        totals, current_sums = live[0], live[1]
        (previous_sums,) = _db_sums(pool, [previous], exchanges, include_nonlive)
    else:
        current_sums, previous_sums = _db_sums(pool, [(start, end), previous], exchanges, include_nonlive)
        if live is None:
            totals = current_sums
            feed = _db_feed(pool, start, end, exchanges, include_nonlive, min_usd)
        else:
            totals = live[0]
            coins_source = f"timescaledb (the live hour holds more than {MAX_SYMBOL_KEYS:,} symbol buckets)"
    coin_of = _coins_of(pool, {(e, s) for e, s, _side in (*current_sums, *previous_sums)})
    return _overview(
        hours,
        start,
        end,
        exchanges,
        include_nonlive,
        source,
        coins_source,
        totals,
        current_sums,
        previous_sums,
        coin_of,
        min_usd,
        feed,
        complete,
    )
