"""Fill a migrated database with a realistic synthetic year, for benchmarks.

    python -m bench.gen_dataset --database-url postgresql://liq@127.0.0.1:5432/liq_bench \
        --days 365 --symbols BTCUSDT,ETHUSDT,SOLUSDT --seed 1 [--end YYYYMMDD] [--source live]

    python -m bench.gen_dataset --market --database-url postgresql://liq@127.0.0.1:5433/liq_bench_market \
        --create-database --days 365 --seed 1 [--scale 1.0] [--coins 400] [--candle-coins 3]

`--market` generates the whole market instead (bench.market_synth, loaded by bench.market_dataset):
400 coins on five venues, about 60 million liquidations a year at `--scale 1`, the `instruments`
table, cascades found by the collector's own detector. The rest of this docstring is about the
few-symbol dataset.

Everything derives from `--seed`; bench.synth generates the market, the liquidation tape, the
cascades and the stream coverage, day by day and symbol by symbol, so the rows do not depend on
how the days are split among workers.

Rows are formatted column-wise and loaded with COPY by worker processes, a week per task. The
rollups (db/rollups.py) and the hourly candles (candles_1h) are then rebuilt
from the raw rows (one INSERT ... SELECT each) and the tables ANALYZEd.
A database whose `liquidations` table holds rows is refused unless `--force`, which replaces
whatever lies inside the generated period.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from multiprocessing import get_context
from threading import Thread
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.market_dataset import TABLES as MARKET_TABLES
from bench.market_dataset import MarketGenerateError, generate_market
from bench.market_universe import MarketConfig
from bench.synth import DAY_MS, MINUTE_MS, GenConfig, Plan, build_plan, generate_symbol_day
from db import rollups
from db.migrate import migrate

_LIQ_COLUMNS = (
    "time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source, sampled, "
    "cascade_id, event_key"
)
_CANDLE_COLUMNS = "time, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source"
_CASCADE_COLUMNS = (
    "id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges, events_by_exchange, "
    "cross_exchange, peak_minute, price_start, price_end, price_move_pct, risk_score, active, source"
)
# Each hour from its 1-minute candles, with the collector's source rule (db/migrations/0008, 0009).
_CANDLES_1H = """
    INSERT INTO candles_1h (time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source)
    SELECT time_bucket(INTERVAL '1 hour', time), exchange, symbol,
           first(open, time), max(high), min(low), last(close, time),
           sum(volume), sum(quote_volume), count(*),
           CASE WHEN bool_and(source = 'live') THEN 'live' ELSE min(source) FILTER (WHERE source <> 'live') END
    FROM candles
    WHERE time >= %s AND time < %s
    GROUP BY 1, 2, 3
"""
_TABLES = (
    "liquidations",
    "liquidations_1m",
    "liquidations_1h",
    "liquidations_1d",
    "liquidations_market_1h",
    "candles",
    "candles_1h",
    "cascades",
    "stream_coverage",
)
_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_WEEK_DAYS = 7

_worker_plan: Plan | None = None  # one plan per worker process, built once by the initializer


class GenerateError(RuntimeError):
    """The target database cannot take the dataset (not empty without --force, bad arguments)."""


def _init_worker(cfg: GenConfig) -> None:
    global _worker_plan
    _worker_plan = build_plan(cfg)


def _load_days_in_worker(database_url: str, days: list[int]) -> dict[str, int]:
    assert _worker_plan is not None, "worker started without its plan"
    return load_days(database_url, _worker_plan, days)


def load_days(database_url: str, plan: Plan, days: list[int]) -> dict[str, int]:
    """Generate the given day indexes for every symbol and COPY them in one transaction."""
    counts = {"liquidations": 0, "candles": 0, "cascades": 0}
    with psycopg.connect(database_url) as conn:
        conn.execute("SET synchronous_commit = off")  # a benchmark load: losing it on a crash is fine
        with conn.cursor() as cur:
            for day in days:
                for symbol_index in range(len(plan.cfg.symbols)):
                    out = generate_symbol_day(plan, symbol_index, day)
                    if out.liquidation_rows:
                        with cur.copy(sql.SQL("COPY liquidations ({}) FROM STDIN").format(sql.SQL(_LIQ_COLUMNS))) as cp:
                            cp.write(out.liquidation_text)
                    if out.candle_rows:
                        with cur.copy(sql.SQL("COPY candles ({}) FROM STDIN").format(sql.SQL(_CANDLE_COLUMNS))) as cp:
                            cp.write(out.candle_text)
                    if out.cascades:
                        with cur.copy(sql.SQL("COPY cascades ({}) FROM STDIN").format(sql.SQL(_CASCADE_COLUMNS))) as cp:
                            for row in out.cascades:
                                cp.write_row(row)
                    counts["liquidations"] += out.liquidation_rows
                    counts["candles"] += out.candle_rows
                    counts["cascades"] += len(out.cascades)
    return counts


def _day_chunks(n_days: int) -> list[list[int]]:
    return [list(range(i, min(i + _WEEK_DAYS, n_days))) for i in range(0, n_days, _WEEK_DAYS)]


def _hour_range(cfg: GenConfig) -> tuple[datetime, datetime]:
    start = datetime.fromtimestamp(cfg.start_ms / 1000, tz=UTC)
    end_hours = -(-cfg.end_ms // 3_600_000)  # ceil: the rollup buckets cover the whole last hour
    return start, datetime.fromtimestamp(end_hours * 3600, tz=UTC)


def _prepare(database_url: str, cfg: GenConfig, force: bool) -> None:
    """Refuse a non-empty database, or with --force clear the generated period in every table."""
    start, end = _hour_range(cfg)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM liquidations)").fetchone()
        if row and row[0] and not force:
            raise GenerateError("the liquidations table is not empty; pass --force to replace the generated period")
        if not force:
            return
        with conn.transaction():
            conn.execute("DELETE FROM liquidations WHERE time >= %s AND time < %s", (start, end))
            conn.execute("DELETE FROM candles WHERE time >= %s AND time < %s", (start, end))
            conn.execute("DELETE FROM cascades WHERE start_time >= %s AND start_time < %s", (start, end))
            conn.execute(
                "DELETE FROM stream_coverage WHERE connected_at < %s AND coalesce(disconnected_at, last_seen_at) > %s",
                (end, start),
            )


def _write_coverage(database_url: str, plan: Plan) -> int:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        columns = "connection_id, exchange, symbols, source, connected_at, last_seen_at, disconnected_at, reason"
        with cur.copy(sql.SQL("COPY stream_coverage ({}) FROM STDIN").format(sql.SQL(columns))) as cp:
            for row in plan.coverage:
                cp.write_row(row)
    return len(plan.coverage)


def _rebuild(
    database_url: str, table: str, time_column: str, insert: sql.Composed, start: datetime, end: datetime
) -> None:
    """Replace `table`'s rows in [start, end) with what `insert` computes from the raw rows."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SET work_mem = '256MB'")
        column = sql.Identifier(time_column)
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(sql.Identifier(table), column, column),
            (start, end),
        )
        conn.execute(insert, (start, end))


def _in_parallel(calls: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    """Run each call on a thread of its own (each opens its own connection); re-raise the first error."""
    errors: list[BaseException] = []

    def run(function: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            function(*args)
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    threads = [Thread(target=run, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _analyze(database_url: str, tables: tuple[str, ...]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def rebuild_rollups(database_url: str, cfg: GenConfig) -> None:
    """The liquidation rollups per symbol and the hourly candles from the raw rows, each on its own
    connection so they run side by side; then the whole market's hours from the symbols'."""
    start, end = _hour_range(cfg)
    calls: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        (
            _rebuild,
            (database_url, table, "bucket", rollups.symbol_rollup(table, width), *rollups.widened(width, start, end)),
        )
        for table, width in rollups.SYMBOL_ROLLUPS
    ]
    calls.append((_rebuild, (database_url, "candles_1h", "time", sql.SQL(_CANDLES_1H).format(), start, end)))
    _in_parallel(calls)
    _rebuild(database_url, rollups.MARKET_ROLLUP, "bucket", rollups.market_rollup(), start, end)


def generate(database_url: str, cfg: GenConfig, workers: int = 2, force: bool = False) -> dict[str, float]:
    """Migrate, check, generate and load; return row counts and the seconds each phase took."""
    began = time.monotonic()
    migrate(database_url)
    _prepare(database_url, cfg, force)
    plan = build_plan(cfg)
    totals: dict[str, float] = {"liquidations": 0, "candles": 0, "cascades": 0}
    totals["stream_coverage"] = _write_coverage(database_url, plan)
    chunks = _day_chunks(cfg.days)
    if workers <= 1:
        results = [load_days(database_url, plan, days) for days in chunks]
    else:
        ctx = get_context("spawn")  # no fork of a process that may hold threads or connections
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg,)) as pool:
            results = list(pool.map(_load_days_in_worker, [database_url] * len(chunks), chunks))
    for result in results:
        for name, value in result.items():
            totals[name] += value
    totals["load_s"] = time.monotonic() - began
    mark = time.monotonic()
    rebuild_rollups(database_url, cfg)
    totals["rollups_s"] = time.monotonic() - mark
    mark = time.monotonic()
    _in_parallel(
        [(_analyze, (database_url, ("liquidations",))), (_analyze, (database_url, _TABLES[1:]))],
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in (*rollups.TABLES, "candles_1h"):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            totals[table] = row[0] if row else 0
    totals["analyze_s"] = time.monotonic() - mark
    totals["total_s"] = time.monotonic() - began
    return totals


def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database from the server's `postgres` database; True when it was created."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def config_from_args(args: argparse.Namespace, now_ms: int | None = None) -> GenConfig:
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in args.symbols.split(",") if s.strip()))
    if not symbols or not all(re.match(r"^[A-Z0-9]{2,24}$", s) for s in symbols):
        raise GenerateError(f"--symbols: expected a list like BTCUSDT,ETHUSDT, got {args.symbols!r}")
    if not _SOURCE_RE.match(args.source):
        raise GenerateError(f"--source: expected a short lower-case label, got {args.source!r}")
    if not 1 <= args.days <= 3660:
        raise GenerateError(f"--days: between 1 and 3660, got {args.days}")
    try:
        end_day = datetime.strptime(args.end, "%Y%m%d").replace(tzinfo=UTC).date() if args.end else None
    except ValueError:
        raise GenerateError(f"--end: expected YYYYMMDD, got {args.end!r}") from None
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if end_day is None:
        end_day = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
    return make_config(symbols, args.days, args.seed, end_day, args.source, now_ms)


def make_config(
    symbols: tuple[str, ...], days: int, seed: int, end_day: date, source: str, now_ms: int | None = None
) -> GenConfig:
    """The period is the `days` whole UTC days ending with `end_day`, cut at the current minute."""
    start_day = end_day - timedelta(days=days - 1)
    start_ms = int(datetime(start_day.year, start_day.month, start_day.day, tzinfo=UTC).timestamp() * 1000)
    end_ms = start_ms + days * DAY_MS
    if now_ms is not None:
        end_ms = min(end_ms, now_ms // MINUTE_MS * MINUTE_MS)
    if end_ms <= start_ms:
        raise GenerateError("the period lies entirely in the future")
    if seed < 0:
        raise GenerateError(f"--seed: a whole number >= 0, got {seed}")
    return GenConfig(symbols=symbols, days=days, seed=seed, start_ms=start_ms, end_ms=end_ms, source=source)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.gen_dataset", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL URL; the schema is migrated first")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end", default=None, help="last day, YYYYMMDD UTC (default: today, cut at now)")
    parser.add_argument("--source", default="live")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--force", action="store_true", help="replace the generated period in a non-empty database")
    parser.add_argument("--create-database", action="store_true", help="create the URL's database when missing")
    market = parser.add_argument_group("whole market (bench.market_synth): five venues, hundreds of coins")
    market.add_argument("--market", action="store_true", help="generate the whole market instead of --symbols")
    market.add_argument("--coins", type=int, default=400, help="coins, BTC first, then down the tail")
    market.add_argument("--scale", type=float, default=1.0, help="event rates x this: 1 gives ~60M liquidations/year")
    market.add_argument("--candle-coins", type=int, default=3, help="1-minute candles for the first N coins")
    return parser


def market_config_from_args(args: argparse.Namespace, now_ms: int | None = None) -> MarketConfig:
    if not 1 <= args.coins <= 2000:
        raise GenerateError(f"--coins: between 1 and 2000, got {args.coins}")
    if not 0 < args.scale <= 10:
        raise GenerateError(f"--scale: above 0 and at most 10, got {args.scale}")
    if not 0 <= args.candle_coins <= args.coins:
        raise GenerateError(f"--candle-coins: between 0 and --coins, got {args.candle_coins}")
    base = config_from_args(args, now_ms)
    return MarketConfig(
        coins=args.coins,
        days=base.days,
        seed=base.seed,
        start_ms=base.start_ms,
        end_ms=base.end_ms,
        source=base.source,
        scale=args.scale,
        candle_coins=args.candle_coins,
    )


def _market_main(args: argparse.Namespace) -> int:
    cfg = market_config_from_args(args)
    first = datetime.fromtimestamp(cfg.start_ms / 1000, tz=UTC)
    last = datetime.fromtimestamp(cfg.end_ms / 1000, tz=UTC)
    print(
        f"generating the whole market ({cfg.coins} coins, 5 venues, scale {cfg.scale}) from {first:%Y%m%d %H:%M:%S} "
        f"to {last:%Y%m%d %H:%M:%S} UTC, seed {cfg.seed}, source {cfg.source!r}, {args.workers} worker(s)",
        flush=True,
    )
    totals = generate_market(
        args.database_url, cfg, workers=args.workers, force=args.force, progress=lambda line: print(line, flush=True)
    )
    for name in MARKET_TABLES:
        print(f"{name:>22}: {int(totals[name]):>12,} rows")
    print(f"   database size: {totals['database_bytes'] / 1e9:,.2f} GB")
    print(
        f"time: load {totals['load_s']:.1f} s, rollups {totals['rollups_s']:.1f} s, "
        f"analyze {totals['analyze_s']:.1f} s, total {totals['total_s']:.1f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.create_database and create_database_if_missing(args.database_url):
            print(f"created database {urlsplit(args.database_url).path.lstrip('/')}")
        if args.market:
            return _market_main(args)
        cfg = config_from_args(args)
        first = datetime.fromtimestamp(cfg.start_ms / 1000, tz=UTC)
        last = datetime.fromtimestamp(cfg.end_ms / 1000, tz=UTC)
        print(
            f"generating {', '.join(cfg.symbols)} on binance+bybit from {first:%Y%m%d %H:%M:%S} "
            f"to {last:%Y%m%d %H:%M:%S} UTC, seed {cfg.seed}, source {cfg.source!r}, {args.workers} worker(s)",
            flush=True,
        )
        totals = generate(args.database_url, cfg, workers=args.workers, force=args.force)
    except (GenerateError, MarketGenerateError, psycopg.Error) as exc:
        print(f"gen_dataset: {exc}", file=sys.stderr)
        return 1
    for name in _TABLES:
        print(f"{name:>22}: {int(totals[name]):>12,} rows")
    print(
        f"time: load {totals['load_s']:.1f} s, rollups {totals['rollups_s']:.1f} s, "
        f"analyze {totals['analyze_s']:.1f} s, total {totals['total_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
