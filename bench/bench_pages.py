"""Server-side time to compute each app page's data on a one-year dataset.

    python -m bench.bench_pages [--database-url URL] [--repeat 5] [--coin BTC] [--only TEXT]

Calls the data functions directly (no Streamlit caching), with the same `Query` (app/query.py)
the page builds from its URL, for a coin (every contract of it on every venue, resolved through
the same catalog as the sidebar's picker) and for ALL, the way each page does on a cold cache,
and prints median and worst time per page against the targets: every page <= 500 ms, the market overview
<= 300 ms for every window (1, 4, 12, 24 h), the chart at every slider position (1 h, 24 h, 7 d,
30 d, 365 d) <= 300 ms.

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
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg_pool import ConnectionPool

from app.data import alerts, analyses, cascades, explorer, heatmap, history, live, market, rows
from app.data.catalog import load_catalog
from app.data.connections import DataUnavailable, open_pool, open_redis
from app.query import HOUR_MS, INTERVAL_MS, Catalog, Query, all_target, auto_interval, coin_target
from common.config import load_settings, reader_url
from common.events import Liquidation, Side
from common.live_scripts import add_liquidations
from common.live_view import Keys

BENCH_DB = "liq_bench"
PAGE_TARGET_MS = 500.0
CHART_TARGET_MS = 300.0
MARKET_TARGET_MS = 300.0
MARKET_FEED_MIN_USD = Decimal(10_000)  # the overview's feed threshold by default (app/pages/market.py)


@dataclass
class BenchContext:
    pool: ConnectionPool
    redis: redis.Redis
    keys: Keys
    now_ms: int
    first_ms: int
    coin: str
    catalog: Catalog
    institutional_usd: Decimal
    pool_url: str = ""  # to open fresh pools for cold calls

    def query(self, whole_market: bool = False, hours: int | None = None) -> Query:
        """What the page's URL `target=BTC` (or `target=ALL`) and `hours=N` make."""
        target = all_target() if whole_market else coin_target(self.coin, self.catalog)
        return Query(target=target, hours=hours)

    def span(self, q: Query) -> tuple[int, int]:
        """The page's range: whole history from the query's first matching event, as app.cache.query_range."""
        return q.time_range(self.now_ms, rows.first_event_ms(self.pool, q) if q.whole_history else None)


PageFn = Callable[[BenchContext], object]


def _accumulated(ctx: BenchContext, whole_market: bool) -> object:
    q = ctx.query(whole_market)
    start, end = ctx.span(q)
    return (
        rows.event_bounds(ctx.pool, q, start, end),
        history.totals(ctx.pool, q, start, end),
        history.coverage(ctx.pool, q, start, end),
        rows.cascade_count(ctx.pool, q, start, end),
        history.largest(ctx.pool, q, start, end),
    )


def _chart(ctx: BenchContext, hours: int | None, whole_market: bool = False) -> object:
    q = ctx.query(whole_market, hours)
    start, end = ctx.span(q)
    interval = INTERVAL_MS[auto_interval(end - start)]
    pair = history.price_pair(q)
    return (
        history.liquidation_bars(ctx.pool, q, start, end, interval),
        history.candles(ctx.pool, pair[0], pair[1], start, end, interval, True) if pair else None,
        history.coverage(ctx.pool, q, start, end),
        history.big_liquidations(ctx.pool, q, start, end, ctx.institutional_usd, history.marker_limit(end - start)),
    )


def _live(ctx: BenchContext, whole_market: bool) -> object:
    return live.snapshot(ctx.redis, ctx.keys, ctx.query(whole_market), now=ctx.now_ms)


def _market(ctx: BenchContext, hours: int) -> object:
    """The landing page: every venue and symbol over the window and the one before it, the feed
    above the page's default size (1 h from the Redis live view, longer windows from the rollups)."""
    q = ctx.query(True)
    return market.market_overview(
        ctx.pool, ctx.redis, ctx.keys.prefix, hours, ctx.now_ms, q.exchanges, q.include_nonlive, MARKET_FEED_MIN_USD
    )


PAGES: dict[str, tuple[PageFn, float]] = {
    "sidebar catalog (every page)": (lambda c: load_catalog(c.pool), PAGE_TARGET_MS),
    **{f"market overview {h} h": (partial(_market, hours=h), MARKET_TARGET_MS) for h in market.WINDOWS},
    "live (coin)": (lambda c: _live(c, False), PAGE_TARGET_MS),
    "live (ALL)": (lambda c: _live(c, True), PAGE_TARGET_MS),
    "accumulated (coin, all history)": (lambda c: _accumulated(c, False), PAGE_TARGET_MS),
    "accumulated (ALL, all history)": (lambda c: _accumulated(c, True), PAGE_TARGET_MS),
    "chart 1 h": (lambda c: _chart(c, 1), CHART_TARGET_MS),
    "chart 24 h": (lambda c: _chart(c, 24), CHART_TARGET_MS),
    "chart 7 d": (lambda c: _chart(c, 168), CHART_TARGET_MS),
    "chart 30 d": (lambda c: _chart(c, 720), CHART_TARGET_MS),
    "chart 365 d": (lambda c: _chart(c, 8760), CHART_TARGET_MS),
    "chart whole history": (lambda c: _chart(c, None), CHART_TARGET_MS),
    **{
        f"chart (ALL) {label}": (partial(_chart, hours=h, whole_market=True), CHART_TARGET_MS)
        for label, h in (
            ("1 h", 1),
            ("24 h", 24),
            ("7 d", 168),
            ("30 d", 720),
            ("365 d", 8760),
            ("whole history", None),
        )
    },
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


# The alerts page reads what the alerter stored. The datasets hold none, so the bench stores one
# alert per cascade (what a `cascade` rule on every coin would have sent): a busier table than a
# real rule set makes. Marked by rule name; some failed, as deliveries do.
_FILL_ALERTS = """
INSERT INTO alerts (rule, kind, key, fired_at, message, status, attempts, channel, event)
SELECT CASE WHEN value_usd >= 1000000 THEN 'bench-cascade-1m' ELSE 'bench-cascade' END, 'cascade', id || ':end',
       end_time, format('%s %s cascade, %s events, $%s', symbol, side, events, round(value_usd)),
       CASE WHEN id % 50 = 0 THEN 'failed' ELSE 'delivered' END, 1, 'telegram',
       jsonb_build_object('symbol', symbol, 'side', side, 'value_usd', value_usd::text)
FROM cascades
ON CONFLICT DO NOTHING
"""


def _ensure_alerts(url: str) -> int:
    """Store the bench's alerts once; return how many alerts the table holds."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM alerts").fetchone()
        if row and row[0]:
            return int(row[0])
        conn.execute(_FILL_ALERTS)
        conn.execute("ANALYZE alerts")
        row = conn.execute("SELECT count(*) FROM alerts").fetchone()
    return int(row[0]) if row else 0


def _alerts(ctx: BenchContext, status: str | None = None) -> object:
    """The alerts page over the whole history (its default), all rules, one status or all."""
    first = alerts.first_fired_at(ctx.pool)
    f = alerts.AlertFilter(first or rows.ts(ctx.first_ms), rows.ts(ctx.now_ms), status)
    return alerts.stored_rule_names(ctx.pool), alerts.status_counts(ctx.pool, f), alerts.alert_history(ctx.pool, f)


def _dataset_bounds(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT time FROM liquidations ORDER BY time LIMIT 1").fetchone()
        last = conn.execute("SELECT time FROM liquidations ORDER BY time DESC LIMIT 1").fetchone()
    assert first and last, "the benchmark database holds no liquidations"
    return int(first[0].timestamp() * 1000), int(last[0].timestamp() * 1000) + 1


def _fill_live_view(url: str, client: redis.Redis, keys: Keys, now_ms: int) -> int:
    """Copy the dataset's last 60 minutes into Redis, encoded as the collector writes them."""
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT exchange, symbol, side, quantity, price, value_usd, time, received_at, raw_side, source, sampled "
            "FROM liquidations WHERE time >= %s AND time < %s",
            (rows.ts(now_ms - HOUR_MS - 120_000), rows.ts(now_ms + 1)),
        ).fetchall()
    events = [
        Liquidation(
            exchange,
            symbol,
            Side(side),
            qty,
            price,
            usd,
            rows.to_ms(at),
            rows.to_ms(received),
            raw_side,
            source,
            sampled,
        )
        for exchange, symbol, side, qty, price, usd, at, received, raw_side, source, sampled in stored
    ]
    added = add_liquidations(client, keys, events)  # members and their bucket sums, as the collector writes them
    client.set(keys.built, now_ms)  # a complete view, as after the collector's rebuild
    return added


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
    parser.add_argument("--coin", default="BTC", help="the coin the single-coin pages read (target=BTC)")
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
    catalog = load_catalog(pool)
    ctx = BenchContext(pool, client, keys, now_ms, first_ms, args.coin, catalog, settings.institutional_usd, pool_url)
    try:
        events = _fill_live_view(args.database_url, client, keys, now_ms)
        days = (now_ms - first_ms) / 86_400_000
        print(f"dataset {urlsplit(args.database_url).path.lstrip('/')}: {days:.0f} days, live window {events:,} events")
        print(f"coin {args.coin}: {len(catalog.of_coin(args.coin))} contracts; {len(catalog.listings)} in the catalog")
        print(f"alerts: {_ensure_alerts(args.database_url):,} stored (one per cascade, the bench's own)")
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
            failed += not (ok_warm and ok_cold)  # the target holds for both
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
# Each mirrors what its page computes on a cold cache: the range of its Query (whole history starts
# at the query's first matching event, as app.cache.query_range), then every query the page runs.


def _heatmap(ctx: BenchContext, hours: int | None, whole_market: bool = False) -> object:
    q = ctx.query(whole_market, hours)
    start, end = ctx.span(q)
    hourly = heatmap.hourly_by_side(ctx.pool, q, start, end)
    return (
        heatmap.heatmap_matrix(hourly, "value_usd", start, end),
        heatmap.seasonality_matrix(hourly, "value_usd", start, end),
        heatmap.sample_warning(hourly, start, end),
    )


def _cascades(ctx: BenchContext, hours: int | None, whole_market: bool = False) -> object:
    q = ctx.query(whole_market, hours)
    start, end = ctx.span(q)
    frame = cascades.cascades(ctx.pool, q, start, end)
    cascades.cascade_totals(ctx.pool, q, start, end)
    if frame.empty:
        return frame
    newest = frame.iloc[0]  # the page shows the newest cascade zoomed in
    first, last = rows.to_ms(newest["start_time"]), rows.to_ms(newest["end_time"])
    members = cascades.cascade_members(ctx.pool, int(newest["id"]), first, last)
    symbols = tuple(sorted(set(members["symbol"]))) if not members.empty else (str(newest["symbol"]),)
    return members, cascades.candles_between(ctx.pool, symbols, first - 15 * 60_000, last + 61 * 60_000, False)


def _analyses(ctx: BenchContext, hours: int | None, whole_market: bool = False) -> object:
    q = ctx.query(whole_market, hours)
    start, end = ctx.span(q)
    interval = auto_interval(end - start)
    series = analyses.volume_series(ctx.pool, q, start, end, interval)
    daily = series if interval == "1d" else analyses.volume_series(ctx.pool, q, start, end, "1d")
    return (
        history.coverage(ctx.pool, q, start, end),
        analyses.totals_by(series, "side"),
        analyses.totals_by(series, "exchange"),
        analyses.daily_summary(daily),
        None if q.is_all else analyses.price_levels(ctx.pool, q, start, end, 40),  # one coin only
        analyses.exchange_summary(series),
        analyses.exchange_timing(ctx.pool, q, start, end),
    )


def _explorer(ctx: BenchContext, hours: int | None, min_usd: int = 0, whole_market: bool = False) -> object:
    q = ctx.query(whole_market, hours).with_changes(min_usd=Decimal(min_usd))
    start, end = ctx.span(q)
    first = explorer.explorer_page(ctx.pool, q, start, end)
    after = (first["time"].iloc[-1].to_pydatetime(), int(first["event_key"].iloc[-1])) if len(first) else None
    count = explorer.explorer_count(ctx.pool, q, start, end)
    return count, explorer.explorer_page(ctx.pool, q, start, end, False, after)  # count, "Next"


PAGES.update(
    {
        "heatmap (coin, whole history)": (lambda c: _heatmap(c, None), PAGE_TARGET_MS),
        "heatmap (ALL, whole history)": (lambda c: _heatmap(c, None, True), PAGE_TARGET_MS),
        "heatmap (coin, 30 d)": (lambda c: _heatmap(c, 720), PAGE_TARGET_MS),
        "cascades (coin, whole history)": (lambda c: _cascades(c, None), PAGE_TARGET_MS),
        "cascades (ALL, whole history)": (lambda c: _cascades(c, None, True), PAGE_TARGET_MS),
        "cascades (coin, 7 d)": (lambda c: _cascades(c, 168), PAGE_TARGET_MS),
        "analyses (coin, whole history)": (lambda c: _analyses(c, None), PAGE_TARGET_MS),
        "analyses (ALL, whole history)": (lambda c: _analyses(c, None, True), PAGE_TARGET_MS),
        "analyses (coin, 24 h)": (lambda c: _analyses(c, 24), PAGE_TARGET_MS),
        "explorer (coin, whole history)": (lambda c: _explorer(c, None), PAGE_TARGET_MS),
        "explorer (ALL, whole history)": (lambda c: _explorer(c, None, whole_market=True), PAGE_TARGET_MS),
        "explorer (coin, 30 d, >= $100,000)": (lambda c: _explorer(c, 720, 100_000), PAGE_TARGET_MS),
        "alerts (whole history)": (lambda c: _alerts(c), PAGE_TARGET_MS),
        "alerts (whole history, failed)": (lambda c: _alerts(c, "failed"), PAGE_TARGET_MS),
    }
)


if __name__ == "__main__":
    sys.exit(main())
