"""Server-side time to compute each app page's data on a one-year dataset.

    python -m bench.bench_pages [--database-url URL] [--repeat 5] [--symbol BTCUSDT]

Calls the data functions directly (no Streamlit caching), the way each page does on a cold
cache, and prints median and worst time per page against the targets: every page <= 500 ms, the
chart at every slider position (1 h, 24 h, 7 d, 30 d, 365 d) <= 300 ms.

The dataset lives in a dedicated database, `liq_bench` on the server at DATABASE_URL by default;
when it is missing or empty it is generated once with bench.gen_dataset (365 days, BTCUSDT,
ETHUSDT, SOLUSDT, seed 1: several minutes) and reused afterwards. "Now" is the dataset's last
event, so figures do not drift as the dataset ages. The live page reads Redis: the dataset's
last 60 minutes are copied under a private prefix at REDIS_URL for the run and deleted after.

Nothing is remembered in-process (the data functions have no memo; Streamlit's caches are not
involved). Warm: calls reuse one connection, as the app's pool does between page loads. Cold:
every call runs on a fresh connection, whose new server backend has no catalog, relation or
hypertable caches yet (the first load after an app or database restart, or after the pool
recycles a connection): the first touch of each chunk costs several ms. Both run after one
untimed call that fills the server's shared buffers. The exit status judges the warm medians.

A page is registered with `PAGES["name"] = (function, target_ms)`.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg_pool import ConnectionPool

from app.data import analyses, cascades, explorer, heatmap, history, live
from app.data.connections import DataUnavailable, open_pool, open_redis
from app.data.scope import Scope, first_event_ms
from app.state import HOUR_MS, INTERVAL_MS, auto_interval
from common.config import load_settings, reader_url
from common.events import Liquidation, Side
from common.live_scripts import add_liquidations
from common.live_view import Keys

BENCH_DB = "liq_bench"
PAGE_TARGET_MS = 500.0
CHART_TARGET_MS = 300.0
EXCHANGES = ("binance", "bybit")


@dataclass
class BenchContext:
    pool: ConnectionPool
    redis: redis.Redis
    keys: Keys
    now_ms: int
    first_ms: int
    symbol: str
    institutional_usd: Decimal
    pool_url: str = ""  # to open fresh pools for cold calls


PageFn = Callable[[BenchContext], object]


def _accumulated(ctx: BenchContext, symbol: str | None) -> object:
    f = history.Filters(symbol, EXCHANGES)
    first, _ = history.event_bounds(ctx.pool, f)
    start, end = (first or ctx.first_ms), ctx.now_ms
    return (
        history.event_bounds(ctx.pool, f, start, end),
        history.totals(ctx.pool, f, start, end),
        history.coverage(ctx.pool, f, start, end),
        history.cascade_count(ctx.pool, f, start, end),
        history.largest(ctx.pool, f, start, end),
    )


def _chart(ctx: BenchContext, hours: int | None) -> object:
    f = history.Filters(ctx.symbol, EXCHANGES)
    first, _ = history.event_bounds(ctx.pool, f)
    start = ctx.now_ms - hours * HOUR_MS if hours else (first or ctx.first_ms)
    interval = INTERVAL_MS[auto_interval(ctx.now_ms - start)]
    return (
        history.liquidation_bars(ctx.pool, f, start, ctx.now_ms, interval),
        history.candles(ctx.pool, "binance", ctx.symbol, start, ctx.now_ms, interval, True),
        history.coverage(ctx.pool, f, start, ctx.now_ms),
        history.big_liquidations(
            ctx.pool, f, start, ctx.now_ms, ctx.institutional_usd, history.marker_limit(ctx.now_ms - start)
        ),
    )


def _live(ctx: BenchContext, symbol: str | None) -> object:
    return live.snapshot(ctx.redis, ctx.keys, symbol, EXCHANGES, now=ctx.now_ms)


PAGES: dict[str, tuple[PageFn, float]] = {
    "live (BTCUSDT)": (lambda c: _live(c, c.symbol), PAGE_TARGET_MS),
    "live (ALL)": (lambda c: _live(c, None), PAGE_TARGET_MS),
    "accumulated (BTCUSDT, all history)": (lambda c: _accumulated(c, c.symbol), PAGE_TARGET_MS),
    "accumulated (ALL, all history)": (lambda c: _accumulated(c, None), PAGE_TARGET_MS),
    "chart 1 h": (lambda c: _chart(c, 1), CHART_TARGET_MS),
    "chart 24 h": (lambda c: _chart(c, 24), CHART_TARGET_MS),
    "chart 7 d": (lambda c: _chart(c, 168), CHART_TARGET_MS),
    "chart 30 d": (lambda c: _chart(c, 720), CHART_TARGET_MS),
    "chart 365 d": (lambda c: _chart(c, 8760), CHART_TARGET_MS),
    "chart whole history": (lambda c: _chart(c, None), CHART_TARGET_MS),
}


def _bench_url(base: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{BENCH_DB}"))


def _ensure_dataset(url: str) -> None:
    """Generate the year once; an existing, filled database is reused as it is."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM liquidations LIMIT 1)").fetchone()
            if row and row[0]:
                return
    except psycopg.Error:
        pass  # missing database or schema: the generator creates and migrates it
    print(f"generating the one-year dataset in {urlsplit(url).path.lstrip('/')} (once; several minutes) ...")
    command = [sys.executable, "-m", "bench.gen_dataset", "--database-url", url, "--create-database"]
    command += ["--days", "365", "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT", "--seed", "1"]
    subprocess.run(command, check=True)


def _dataset_bounds(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT time FROM liquidations ORDER BY time LIMIT 1").fetchone()
        last = conn.execute("SELECT time FROM liquidations ORDER BY time DESC LIMIT 1").fetchone()
    assert first and last, "the benchmark database holds no liquidations"
    return int(first[0].timestamp() * 1000), int(last[0].timestamp() * 1000) + 1


def _fill_live_view(url: str, client: redis.Redis, keys: Keys, now_ms: int) -> int:
    """Copy the dataset's last 60 minutes into Redis, encoded as the collector writes them."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT exchange, symbol, side, quantity, price, value_usd, time, received_at, raw_side, source, sampled "
            "FROM liquidations WHERE time >= %s AND time < %s",
            (history.ts(now_ms - HOUR_MS - 120_000), history.ts(now_ms + 1)),
        ).fetchall()
    events = [
        Liquidation(
            exchange,
            symbol,
            Side(side),
            qty,
            price,
            usd,
            history.to_ms(at),
            history.to_ms(received),
            raw_side,
            source,
            sampled,
        )
        for exchange, symbol, side, qty, price, usd, at, received, raw_side, source, sampled in rows
    ]
    return add_liquidations(client, keys, events)  # members and their bucket sums, as the collector writes them


def _fresh_pool(ctx: BenchContext) -> None:
    """Replace the context's pool by a new one: its connection starts a new server backend."""
    old, ctx.pool = ctx.pool, open_pool(ctx.pool_url)
    old.close()


def _measure(fn: PageFn, ctx: BenchContext, repeat: int, cold: bool) -> list[float]:
    """Milliseconds per call; cold calls each get a fresh connection (opened outside the timing)."""
    fn(ctx)  # fill the server's shared buffers; Streamlit's caches are never involved
    out: list[float] = []
    for _ in range(repeat):
        if cold:
            _fresh_pool(ctx)
        t0 = time.perf_counter()
        fn(ctx)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=_bench_url(str(settings.database_url)))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--only", default="", help="run only pages whose name contains this text")
    args = parser.parse_args(argv)

    _ensure_dataset(args.database_url)
    first_ms, now_ms = _dataset_bounds(args.database_url)
    pool_url = reader_url(args.database_url, str(settings.reader_password))
    try:  # read as the app does (the read-only role); fall back to the owner's URL
        pool = open_pool(pool_url)
    except DataUnavailable:
        pool_url = args.database_url
        pool = open_pool(pool_url)
    client = open_redis(str(settings.redis_url))
    keys = Keys(f"liqbench:{secrets.token_hex(4)}:")
    ctx = BenchContext(pool, client, keys, now_ms, first_ms, args.symbol, settings.institutional_usd, pool_url)
    try:
        events = _fill_live_view(args.database_url, client, keys, now_ms)
        days = (now_ms - first_ms) / 86_400_000
        print(f"dataset {urlsplit(args.database_url).path.lstrip('/')}: {days:.0f} days, live window {events:,} events")
        print("ms; cold = every call on a fresh connection (new server backend); warm = connection reused")
        print(
            f"{'page':<38} {'warm median':>11} {'warm max':>9} {'cold median':>11} {'cold max':>9} {'target':>7}"
            "  ok warm  ok cold"
        )
        failed = 0
        for name, (fn, target) in PAGES.items():
            if args.only and args.only not in name:
                continue
            warm = _measure(fn, ctx, args.repeat, cold=False)
            cold = _measure(fn, ctx, args.repeat, cold=True)
            ok_warm, ok_cold = statistics.median(warm) <= target, statistics.median(cold) <= target
            failed += not ok_warm
            print(
                f"{name:<38} {statistics.median(warm):>11.1f} {max(warm):>9.1f} {statistics.median(cold):>11.1f} "
                f"{max(cold):>9.1f} {target:>7.0f}  {'yes' if ok_warm else 'NO':>7}  {'yes' if ok_cold else 'NO':>7}"
            )
        return 1 if failed else 0
    finally:
        client.delete(*keys.all())
        client.close()
        ctx.pool.close()  # cold calls replaced the first pool


# --- heatmap, cascades, analyses, explorer -----------------------------------------------------
# Each mirrors what its page computes on a cold cache: the view's Scope (whole history starts at
# the first event, as app.data.scope.scope_for does), then every query the page runs.


def _scope(ctx: BenchContext, hours: int | None, symbol: str | None = "") -> Scope:
    start = ctx.now_ms - hours * HOUR_MS if hours else (first_event_ms(ctx.pool, False) or ctx.first_ms)
    return Scope(start, ctx.now_ms, ctx.symbol if symbol == "" else symbol, EXCHANGES, False)


def _heatmap(ctx: BenchContext, hours: int | None) -> object:
    scope = _scope(ctx, hours)
    hourly = heatmap.hourly_by_side(ctx.pool, scope)
    return (
        heatmap.heatmap_matrix(hourly, None, "value_usd", scope),
        heatmap.seasonality_matrix(hourly, None, "value_usd", scope),
        heatmap.sample_warning(hourly, scope),
    )


def _cascades(ctx: BenchContext, hours: int | None) -> object:
    scope = _scope(ctx, hours)
    frame = cascades.cascades(ctx.pool, scope)
    cascades.cascade_totals(ctx.pool, scope)
    if frame.empty:
        return frame
    newest = frame.iloc[0]  # the page shows the newest cascade zoomed in
    start, end = history.to_ms(newest["start_time"]), history.to_ms(newest["end_time"])
    return (
        cascades.cascade_members(ctx.pool, int(newest["id"]), start, end),
        cascades.candles_between(ctx.pool, (str(newest["symbol"]),), start - 15 * 60_000, end + 61 * 60_000, False),
    )


def _analyses(ctx: BenchContext, hours: int | None, symbol: str | None = "") -> object:
    scope = _scope(ctx, hours, symbol)
    interval = auto_interval(scope.end_ms - scope.start_ms)
    series = analyses.volume_series(ctx.pool, scope, interval)
    daily = series if interval == "1d" else analyses.volume_series(ctx.pool, scope, "1d")
    return (
        history.coverage(ctx.pool, history.Filters(scope.symbol, EXCHANGES), scope.start_ms, scope.end_ms),
        analyses.totals_by(series, "side"),
        analyses.totals_by(series, "exchange"),
        analyses.daily_summary(daily),
        analyses.price_levels(ctx.pool, scope, 40) if scope.symbol else None,  # one symbol only
        analyses.exchange_summary(series),
        analyses.exchange_timing(ctx.pool, scope),
    )


def _explorer(ctx: BenchContext, hours: int | None, min_usd: int = 0) -> object:
    f = explorer.ExplorerFilter(_scope(ctx, hours), None, Decimal(min_usd))
    first = explorer.explorer_page(ctx.pool, f)
    after = (first["time"].iloc[-1].to_pydatetime(), int(first["event_key"].iloc[-1])) if len(first) else None
    return explorer.explorer_count(ctx.pool, f), explorer.explorer_page(ctx.pool, f, after)  # count, "Next"


PAGES.update(
    {
        "heatmap (whole history)": (lambda c: _heatmap(c, None), PAGE_TARGET_MS),
        "heatmap (30 d)": (lambda c: _heatmap(c, 720), PAGE_TARGET_MS),
        "cascades (whole history)": (lambda c: _cascades(c, None), PAGE_TARGET_MS),
        "cascades (7 d)": (lambda c: _cascades(c, 168), PAGE_TARGET_MS),
        "analyses (whole history)": (lambda c: _analyses(c, None), PAGE_TARGET_MS),
        "analyses (ALL, whole history)": (lambda c: _analyses(c, None, None), PAGE_TARGET_MS),
        "analyses (24 h)": (lambda c: _analyses(c, 24), PAGE_TARGET_MS),
        "explorer (whole history)": (lambda c: _explorer(c, None), PAGE_TARGET_MS),
        "explorer (30 d, >= $100,000)": (lambda c: _explorer(c, 720, 100_000), PAGE_TARGET_MS),
    }
)


if __name__ == "__main__":
    sys.exit(main())
