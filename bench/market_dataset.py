"""Load the whole-market dataset of bench.market_synth into a migrated database.

    python -m bench.gen_dataset --market --database-url postgresql://liq@127.0.0.1:5433/liq_bench_market \
        --days 365 --seed 1 [--scale 1.0] [--coins 400] [--candle-coins 3] [--workers 2]

Coins are shared among worker processes (largest first, each to the least loaded worker); a
worker runs each of its coins through the whole period, a week per transaction (liquidations,
1-minute candles for the first `--candle-coins` coins, hourly candles for every listing, the
cascades that ended). The instruments and the stream coverage are written first, the rollups
(db/rollups.py) rebuilt from the raw rows at the end, a month per statement,
and every table ANALYZEd. A database whose `liquidations` table holds rows is refused unless
`force`, which empties the generated tables first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from typing import Any

import psycopg
from psycopg import sql

from bench.market_synth import coin_chunks
from bench.market_universe import Market, MarketConfig, build_market, instrument_rows
from db import rollups
from db.migrate import migrate

LIQ_COLUMNS = (
    "time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source, sampled, "
    "event_key, cascade_id"
)
_CANDLE_COLUMNS = "time, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source"
_HOUR_COLUMNS = "time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source"
_CASCADE_COLUMNS = (
    "id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges, events_by_exchange, "
    "cross_exchange, peak_minute, price_start, price_end, price_move_pct, risk_score, active, source, usd_by_exchange"
)
_INSTRUMENT_COLUMNS = (
    "exchange, symbol, base, quote, contract_type, multiplier, size_unit, contract_size, listed_at, updated_at"
)
_COVERAGE_COLUMNS = "connection_id, exchange, symbols, source, connected_at, last_seen_at, disconnected_at, reason"
TABLES = (
    "liquidations",
    "liquidations_1m",
    "liquidations_1h",
    "liquidations_1d",
    "liquidations_market_1h",
    "candles",
    "candles_1h",
    "cascades",
    "stream_coverage",
    "instruments",
)

_worker_market: Market | None = None


class MarketGenerateError(RuntimeError):
    """The target database cannot take the dataset (not empty without force)."""


def _init_worker(cfg: MarketConfig) -> None:
    global _worker_market
    _worker_market = build_market(cfg)


def _load_in_worker(database_url: str, coins: list[int]) -> dict[str, int]:
    assert _worker_market is not None, "worker started without its market"
    return load_coins(database_url, _worker_market, coins, lambda line: print(line, flush=True))


def _copy_text(cur: psycopg.Cursor[Any], table: str, columns: str, text: str) -> None:
    if text:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), sql.SQL(columns))) as cp:
            cp.write(text)


def load_coins(
    database_url: str, market: Market, coins: list[int], progress: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Generate each coin through the whole period and COPY it, a week per transaction."""
    counts = {"liquidations": 0, "candles": 0, "candles_1h": 0, "cascades": 0}
    # autocommit, so that each `conn.transaction()` below commits on its own (not a savepoint of one
    # transaction held for the whole run, whose new chunks would block the other workers)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")  # a benchmark load: losing it on a crash is fine
        for index in coins:
            for chunk in coin_chunks(market, index):
                with conn.transaction(), conn.cursor() as cur:
                    _copy_text(cur, "liquidations", LIQ_COLUMNS, chunk.liquidation_text)
                    _copy_text(cur, "candles", _CANDLE_COLUMNS, chunk.candle_text)
                    _copy_text(cur, "candles_1h", _HOUR_COLUMNS, chunk.hour_text)
                    if chunk.cascades:
                        query = sql.SQL("COPY cascades ({}) FROM STDIN").format(sql.SQL(_CASCADE_COLUMNS))
                        with cur.copy(query) as cp:
                            for row in chunk.cascades:
                                cp.write_row(row)
                counts["liquidations"] += chunk.liquidation_rows
                counts["candles"] += chunk.candle_rows
                counts["candles_1h"] += chunk.hour_rows
                counts["cascades"] += len(chunk.cascades)
            if progress is not None:
                progress(f"coin {market.coins[index].base} done: {counts['liquidations']:,} liquidations so far")
    return counts


def _prepare(database_url: str, force: bool) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM liquidations)").fetchone()
        if row and row[0] and not force:
            raise MarketGenerateError("the liquidations table is not empty; pass --force to replace it")
        if force:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))


def _write_static(database_url: str, market: Market) -> None:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        for table, columns, rows in (
            ("stream_coverage", _COVERAGE_COLUMNS, market.coverage),
            ("instruments", _INSTRUMENT_COLUMNS, instrument_rows(market)),
        ):
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), sql.SQL(columns))) as cp:
                for row in rows:
                    cp.write_row(row)


def _split(market: Market, workers: int) -> list[list[int]]:
    """Coins to workers, largest first to the least loaded, so the workers finish together."""
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for index in sorted(range(len(market.coins)), key=lambda i: -market.coins[i].events_per_day):
        w = load.index(min(load))
        shares[w].append(index)
        load[w] += market.coins[index].events_per_day * len(market.coins[index].listings) ** 0.3 + 1.0
    return [s for s in shares if s]


def rebuild_rollups(database_url: str, cfg: MarketConfig) -> None:
    """Every liquidation rollup (db/rollups.py) from the raw rows, a month per statement."""
    start = datetime.fromtimestamp(cfg.start_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(-(-cfg.end_ms // 3_600_000) * 3600, tz=UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        inserts = [(table, rollups.symbol_rollup(table, width)) for table, width in rollups.SYMBOL_ROLLUPS]
        for table, insert in [*inserts, (rollups.MARKET_ROLLUP, rollups.market_rollup())]:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
            at = start
            while at < end:
                until = min(at + timedelta(days=30), end)
                conn.execute(insert, (at, until))
                at = until


def table_counts(database_url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in TABLES:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            out[table] = row[0] if row else 0
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        out["database_bytes"] = size[0] if size else 0
    return out


def generate_market(
    database_url: str,
    cfg: MarketConfig,
    workers: int = 2,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Migrate, check, generate and load; return row counts, the database size and the seconds per phase."""
    began = time.monotonic()
    migrate(database_url)
    _prepare(database_url, force)
    market = build_market(cfg)
    _write_static(database_url, market)
    shares = _split(market, max(1, workers))
    if len(shares) <= 1:
        results = [load_coins(database_url, market, share, progress) for share in shares]
    else:
        ctx = get_context("spawn")  # no fork of a process that may hold connections
        with ProcessPoolExecutor(len(shares), mp_context=ctx, initializer=_init_worker, initargs=(cfg,)) as pool:
            results = list(pool.map(_load_in_worker, [database_url] * len(shares), shares))
    totals: dict[str, float] = {"load_s": time.monotonic() - began}
    mark = time.monotonic()
    rebuild_rollups(database_url, cfg)
    totals["rollups_s"] = time.monotonic() - mark
    mark = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    totals["analyze_s"] = time.monotonic() - mark
    totals.update(table_counts(database_url))
    generated = {k: sum(r[k] for r in results) for k in results[0]} if results else {}
    for name, count in generated.items():
        if totals[name] != count:
            raise MarketGenerateError(f"{name}: generated {count:,} rows, the table holds {totals[name]:,}")
    totals["total_s"] = time.monotonic() - began
    return totals
