"""Seeding helpers for the app tests: known rows into the real test database and Redis.

Everything is written the way the collector writes it: raw liquidations plus rollups that equal
an aggregate over them (`rebuild_rollups`), candles, cascades, stream_coverage, and the Redis live
view through the common.live_view codecs. Tests then assert that the app shows exactly the
totals computed here from the same Python objects (`expected_totals`).

Typical use (fixtures `settings`, `clean_db`, `redis_prefix`, `sync_redis` from tests/conftest.py):

    now = now_ms()
    liqs = [liq("bybit", "LONG", "0.5", "60000", now - 60_000), ...]
    insert_liquidations(settings.database_url, liqs)
    redis_liquidations(sync_redis, settings.redis_prefix, liqs)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    app_env(monkeypatch, settings)
    at = open_app("live", {"symbol": "BTCUSDT"})
    assert metric(at, "USD liquidated") == fmt_usd(expected_totals(liqs).usd)

"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.cache import close_all
from app.gate import forget_attempts
from app.query import Catalog, Query, all_target, symbol_target
from common import venues
from common.config import Settings
from common.events import Candle, Cascade, Liquidation, Side
from common.live_scripts import add_liquidations
from common.live_view import Keys, encode_cascade
from db import rollups

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "app" / "main.py"
ENTRY = Path(__file__).resolve().parent / "entry.py"
PAGE_FILES = {
    name: ROOT / "app" / "pages" / f"{name}.py"
    for name in ("market", "live", "accumulated", "chart", "heatmap", "cascades", "alerts", "analyses", "explorer")
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# --- Building events ---------------------------------------------------------------------------


def liq(
    exchange: str,
    side: str,
    quantity: str,
    price: str,
    time_ms: int,
    symbol: str = "BTCUSDT",
    source: str = "live",
    cascade_id: int | None = None,
) -> Liquidation:
    """One liquidation; USD = quantity * price; rows of sampled venues (Binance, OKX...) are a lower bound."""
    q, p = Decimal(quantity), Decimal(price)
    raw_side = {("binance", "LONG"): "SELL", ("binance", "SHORT"): "BUY"}.get(
        (exchange, side), "Buy" if side == "LONG" else "Sell"
    )
    return Liquidation(
        exchange=exchange,
        symbol=symbol,
        side=Side(side),
        quantity=q,
        price=p,
        value_usd=q * p,
        time_ms=time_ms,
        received_ms=time_ms + 150,
        raw_side=raw_side,
        source=source,
        sampled=venues.is_sampled(exchange),
        cascade_id=cascade_id,
    )


def make_candles(
    exchange: str,
    symbol: str,
    start_ms: int,
    minutes: int,
    price: str = "60000",
    step: str = "10",
    volume: str = "12.5",
    source: str = "live",
) -> list[Candle]:
    """`minutes` closed 1-minute candles from `start_ms` (floored to the minute), price rising by `step`."""
    first = start_ms - start_ms % 60_000
    out: list[Candle] = []
    p, s, v = Decimal(price), Decimal(step), Decimal(volume)
    for i in range(minutes):
        o = p + s * i
        c = o + s
        out.append(
            Candle(
                exchange=exchange,
                symbol=symbol,
                open_ms=first + i * 60_000,
                open=o,
                high=max(o, c) + 5,
                low=min(o, c) - 5,
                close=c,
                volume=v,
                quote_volume=v * c,
                closed=True,
                received_ms=first + i * 60_000 + 60_000,
                source=source,
            )
        )
    return out


@dataclass
class Coverage:
    """One stream_coverage row; `disconnected_ms=None` is a connection that is still open."""

    exchange: str
    connected_ms: int
    last_seen_ms: int
    disconnected_ms: int | None = None
    symbols: tuple[str, ...] = ("BTCUSDT",)
    source: str = "live"
    connection_id: str = ""
    reason: str = ""


# --- TimescaleDB ---------------------------------------------------------------------------------


def insert_liquidations(database_url: str, liqs: Iterable[Liquidation], rollups: bool = True) -> None:
    """Raw rows, then (by default) rollups rebuilt from all raw rows so they always agree."""
    rows = [
        (
            ts(e.time_ms),
            e.exchange,
            e.symbol,
            str(e.side),
            e.quantity,
            e.price,
            e.value_usd,
            e.raw_side,
            ts(e.received_ms),
            e.source,
            e.sampled,
            e.cascade_id,
            e.key,
        )
        for e in liqs
    ]
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO liquidations (time, exchange, symbol, side, quantity, price, value_usd, raw_side,
                                         received_at, source, sampled, cascade_id, event_key)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            rows,
        )
    if rollups:
        rebuild_rollups(database_url)


def rebuild_rollups(database_url: str) -> None:
    """Every liquidation rollup as an exact aggregate of the raw rows (what the collector maintains)."""
    with psycopg.connect(database_url) as conn:
        rollups.rebuild(conn, datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def insert_candles(database_url: str, candles: Iterable[Candle]) -> None:
    rows = [
        (
            ts(c.open_ms),
            c.exchange,
            c.symbol,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.quote_volume,
            c.closed,
            c.source,
        )
        for c in candles
    ]
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO candles (time, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (exchange, symbol, time) DO UPDATE SET close = EXCLUDED.close""",
            rows,
        )
    rebuild_candles_1h(database_url)


def rebuild_candles_1h(database_url: str) -> None:
    """candles_1h as the exact aggregate of all minutes, with the collector's `source` rule:
    'live' only when every minute of the hour is live."""
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE candles_1h")
        conn.execute(
            """INSERT INTO candles_1h (time, exchange, symbol, open, high, low, close, volume, quote_volume,
                                       minutes, source)
               SELECT time_bucket('1 hour', time), exchange, symbol, first(open, time), max(high), min(low),
                      last(close, time), sum(volume), sum(quote_volume), count(*),
                      CASE WHEN bool_and(source = 'live') THEN 'live'
                           ELSE min(source) FILTER (WHERE source <> 'live') END
               FROM candles GROUP BY 1, 2, 3"""
        )


def insert_coverage(database_url: str, rows: Iterable[Coverage]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        for i, r in enumerate(rows):
            cur.execute(
                """INSERT INTO stream_coverage (connection_id, exchange, symbols, source, connected_at,
                                                last_seen_at, disconnected_at, reason)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    r.connection_id or f"{r.exchange}-{r.connected_ms}-{i}",
                    r.exchange,
                    list(r.symbols),
                    r.source,
                    ts(r.connected_ms),
                    ts(r.last_seen_ms),
                    None if r.disconnected_ms is None else ts(r.disconnected_ms),
                    r.reason,
                ),
            )


def insert_cascades(database_url: str, cascades: Iterable[Cascade]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        for c in cascades:
            cur.execute(
                """INSERT INTO cascades (id, symbol, side, start_time, end_time, events, quantity, value_usd,
                                         exchanges, events_by_exchange, cross_exchange, peak_minute,
                                         price_start, price_end, price_move_pct, risk_score, active, source)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    c.id,
                    c.symbol,
                    str(c.side),
                    ts(c.start_ms),
                    ts(c.end_ms),
                    c.count,
                    c.quantity,
                    c.value_usd,
                    list(c.exchanges),
                    json.dumps(c.counts),
                    c.cross_exchange,
                    ts(c.peak_minute_ms) if c.peak_minute_ms else None,
                    c.price_start,
                    c.price_end,
                    c.price_move_pct,
                    c.risk_score,
                    c.active,
                    c.source,
                ),
            )


def cascade_of(members: Sequence[Liquidation], cascade_id: int, active: bool = False) -> Cascade:
    """A Cascade summarising `members` (same symbol and side, any order), as the detector would."""
    members = sorted(members, key=lambda m: m.time_ms)
    first, last = members[0], members[-1]
    counts: dict[str, int] = {}
    for m in members:
        counts[m.exchange] = counts.get(m.exchange, 0) + 1
    return Cascade(
        id=cascade_id,
        symbol=first.symbol,
        side=first.side,
        start_ms=first.time_ms,
        end_ms=last.time_ms,
        count=len(members),
        quantity=sum((m.quantity for m in members), Decimal(0)),
        value_usd=sum((m.value_usd for m in members), Decimal(0)),
        counts=counts,
        peak_minute_ms=first.time_ms - first.time_ms % 60_000,
        price_start=first.price,
        price_end=last.price,
        risk_score=50,
        active=active,
        source=first.source,
    )


# --- Redis live view -------------------------------------------------------------------------------


def redis_liquidations(client: redis.Redis, prefix: str, liqs: Iterable[Liquidation]) -> None:
    """Members and their bucket sums, through the collector's own write script."""
    add_liquidations(client, Keys(prefix), list(liqs))


def redis_cascades(client: redis.Redis, prefix: str, cascades: Iterable[Cascade]) -> None:
    mapping: dict[str | bytes, bytes | float | int | str] = {str(c.id): encode_cascade(c) for c in cascades}
    if mapping:
        client.hset(Keys(prefix).cascades, mapping=mapping)


def health_snapshot(exchange: str, now: int, connected: bool = True, **overrides: Any) -> dict[str, Any]:
    """A StreamHealth.snapshot()-shaped dict (collector/health.py), last message 1 s ago by default."""
    snap: dict[str, Any] = {
        "exchange": exchange,
        "source": "live",
        "connected": connected,
        "connected_since_ms": now - 7_200_000 if connected else None,
        "last_message_ms": now - 1000,
        "last_message_age_s": 1.0,
        "messages": 1234,
        "events": 56,
        "reconnects": 0,
        "last_error": "",
        "last_error_ms": None,
        "drops": {},
        "at_ms": now,
    }
    snap.update(overrides)
    return snap


def redis_health(client: redis.Redis, prefix: str, snapshots: Iterable[Mapping[str, Any]]) -> None:
    mapping: dict[str | bytes, bytes | float | int | str] = {s["exchange"]: json.dumps(s) for s in snapshots}
    client.hset(Keys(prefix).health, mapping=mapping)


def instrument_state(now: int, source: str = "rest", **overrides: Any) -> dict[str, Any]:
    """One venue of the collector state's "instruments" (InstrumentCatalog.state(), catalog.py)."""
    state: dict[str, Any] = {
        "instruments": 612,
        "tracked": 610,
        "candles": 610,
        "source": source,
        "last_refresh_ms": now - 600_000 if source == "rest" else None,
        "stored_ms": now - 86_400_000 if source == "database" else 0,
        "error": "" if source == "rest" else "ConnectError: connection refused",
        "failures": 0 if source == "rest" else 3,
        "next_attempt_s": 3000.0 if source == "rest" else 40.0,
        "unlisted": [],
        "skipped": {},
    }
    state.update(overrides)
    return state


def redis_heartbeat(
    client: redis.Redis,
    prefix: str,
    heartbeat_ms: int,
    source: str = "live",
    instruments: Mapping[str, Mapping[str, Any]] | None = None,
    exchanges: Sequence[str] = ("binance", "bybit"),
) -> None:
    """The collector's state hash as collector/pipeline.py writes it (sources: exchange -> source;
    `instruments`: exchange -> instrument_state(), absent unless given, as from older collectors)."""
    state = {
        "heartbeat_ms": heartbeat_ms,
        "started_ms": heartbeat_ms - 3_600_000,
        "pid": 4242,
        "sources": dict.fromkeys(exchanges, source),
        "queue": 0,
        "spool": {"pending_events": 0, "bytes": 0, "state": "idle"},
        "redis_rebuilt_ms": None,
    }
    if instruments is not None:
        state["instruments"] = {k: dict(v) for k, v in instruments.items()}
    client.hset(Keys(prefix).collector, "state", json.dumps(state))
    client.set(Keys(prefix).built, str(heartbeat_ms))


# --- Expected figures ------------------------------------------------------------------------------


@dataclass
class Totals:
    count: int = 0
    quantity: Decimal = Decimal(0)
    usd: Decimal = Decimal(0)
    by_side: dict[str, Totals] = field(default_factory=dict)
    by_exchange: dict[str, Totals] = field(default_factory=dict)


def expected_totals(liqs: Iterable[Liquidation]) -> Totals:
    """Count, base quantity and USD overall, per side and per exchange."""
    out = Totals()
    for e in liqs:
        for bucket in (
            out,
            out.by_side.setdefault(str(e.side), Totals()),
            out.by_exchange.setdefault(e.exchange, Totals()),
        ):
            bucket.count += 1
            bucket.quantity += e.quantity
            bucket.usd += e.value_usd
    return out


# --- Running the app ---
#
# `open_app` runs the frame through tests/app/entry.py (see its docstring): the app as a server
# that has been up for a while runs it. `open_fresh` runs app/main.py itself, whose every AppTest
# run starts like the first run on a freshly started server (legacy pages mode, see app/gate.py).


def app_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, **extra: str) -> None:
    """Point the app (load_settings) at this test's database and Redis prefix; clear Streamlit caches."""
    env = {
        "DATABASE_URL": str(settings.database_url),
        "LIQ_APP_DATABASE_URL": str(settings.app_database_url),
        "REDIS_URL": str(settings.redis_url),
        "LIQ_REDIS_PREFIX": settings.redis_prefix,
        "LIQ_NONLIVE_SOURCE": settings.nonlive_source,
        "LIQ_SYMBOLS": ",".join(settings.symbols),
        "LIQ_EXCHANGES": ",".join(settings.exchanges),
        "LIQ_APP_PASSWORD": "",
    }
    env.update(extra)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    close_all()  # pools of earlier tests: closed, not left to the garbage collector
    st.cache_data.clear()
    st.cache_resource.clear()  # settings are cached per process
    forget_attempts()  # password attempts are counted per process (app/gate.py)


def _page_path(script: Path, page: str) -> str:
    return os.path.relpath(PAGE_FILES[page], script.parent)


def open_app(page: str | None = None, params: Mapping[str, str] | None = None, timeout: float = 60) -> AppTest:
    """Run the frame (optionally with URL params: it lands on the Market overview), then switch to
    `page` (url path) and run it."""
    at = AppTest.from_file(str(ENTRY), default_timeout=timeout)
    for name, value in (params or {}).items():
        at.query_params[name] = value
    at.run()
    if page is not None and page != "market":  # the landing page
        at.switch_page(_page_path(ENTRY, page)).run()
    return at


def open_fresh(page: str, params: Mapping[str, str] | None = None, timeout: float = 60) -> AppTest:
    """A new session's first request for `/page` on a freshly started server: app/main.py with
    the legacy pages folder next to it, the page named before the first run (a deep link)."""
    at = AppTest.from_file(str(MAIN), default_timeout=timeout)
    for name, value in (params or {}).items():
        at.query_params[name] = value
    return at.switch_page(_page_path(MAIN, page)).run()


def no_exceptions(at: AppTest) -> None:
    """Fail with the messages when a page raised."""
    assert not at.exception, [e.message for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    """The value of the one metric with this label."""
    found = [m.value for m in at.metric if m.label == label]
    assert len(found) == 1, (label, [m.label for m in at.metric])
    return str(found[0])


def shown(markdown: str) -> str:
    """Markdown source as the reader sees it: backslash escapes and the invisible word joiners
    of app.format.plain_md removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def all_text(at: AppTest) -> str:
    """Text of markdown, captions, alerts and metrics (escapes removed), for 'is this shown' assertions."""
    parts: list[str] = []
    for group in (
        at.markdown,
        at.caption,
        at.info,
        at.warning,
        at.error,
        at.success,
        at.title,
        at.header,
        at.subheader,
    ):
        parts += [str(e.value) for e in group]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return shown("\n".join(parts))


# =================================================================================================
# The history dataset (heatmap, cascades, analyses, explorer, downloads, CLI): one fixed dataset dated
# 20261101 .. 20261120 UTC, so pages open with ?since=20261101&until=20261120 and every expected
# figure is computed from the same Liquidation objects that were written.
# =================================================================================================

HISTORY_START_MS = 1_793_491_200_000  # 20261101 00:00:00 UTC
HISTORY_DAYS = 20
HISTORY_RANGE = {"since": "20261101", "until": "20261120"}
HISTORY_CASCADE_LONG = 7_001  # BTCUSDT LONG, binance + bybit, 20261106 10:00:00 .. 10:00:45
HISTORY_CASCADE_SHORT = 7_002  # BTCUSDT SHORT, bybit only, 20261113 15:30:00 .. 15:30:20
HISTORY_LONG_START_MS = HISTORY_START_MS + 5 * 86_400_000 + 10 * 3_600_000
HISTORY_SHORT_START_MS = HISTORY_START_MS + 12 * 86_400_000 + 15 * 3_600_000 + 30 * 60_000


def history_liquidations() -> list[Liquidation]:
    """About 1,800 liquidations over 20 days: two symbols, both exchanges, ~5% non-live, two cascades."""
    import random

    rng = random.Random(20261101)
    out: list[Liquidation] = []
    for day in range(HISTORY_DAYS):
        for _ in range(90):
            hour = rng.choice((0, 3, 8, 9, 13, 14, 14, 15, 20, 21, 23))  # a clear hour-of-day pattern
            t = HISTORY_START_MS + day * 86_400_000 + hour * 3_600_000 + rng.randrange(3_600_000)
            symbol = rng.choice(("BTCUSDT", "BTCUSDT", "ETHUSDT"))
            cents = rng.randrange(9_000_000, 10_000_000) if symbol == "BTCUSDT" else rng.randrange(300_000, 400_000)
            out.append(
                liq(
                    rng.choice(("binance", "bybit")),
                    rng.choice(("LONG", "SHORT")),
                    str(Decimal(rng.randrange(1, 50_000)) / 10_000),
                    str(Decimal(cents) / 100),
                    t,
                    symbol=symbol,
                    source="test" if rng.random() < 0.05 else "live",
                )
            )
    for i, exchange in enumerate(("binance", "bybit", "bybit", "binance", "bybit", "bybit")):
        out.append(
            liq(
                exchange,
                "LONG",
                "1.5",
                str(95_000 - 100 * i),
                HISTORY_LONG_START_MS + i * 9_000,
                cascade_id=HISTORY_CASCADE_LONG,
            )
        )
    for i in range(5):
        out.append(
            liq(
                "bybit",
                "SHORT",
                "2",
                str(96_000 + 50 * i),
                HISTORY_SHORT_START_MS + i * 5_000,
                cascade_id=HISTORY_CASCADE_SHORT,
            )
        )
    return out


def history_candles() -> list[Candle]:
    """BTCUSDT 1-minute candles on both exchanges from 30 minutes before to 70 after each cascade.
    Closes rise by 1 a minute: 94971 (binance) and 94971.5 (bybit) in the first minute."""
    out: list[Candle] = []
    for start_ms in (HISTORY_LONG_START_MS, HISTORY_SHORT_START_MS):
        out += make_candles("binance", "BTCUSDT", start_ms - 30 * 60_000, 101, price="94970", step="1")
        out += make_candles("bybit", "BTCUSDT", start_ms - 30 * 60_000, 101, price="94970.5", step="1")
    return out


def history_cascades(liqs: Sequence[Liquidation]) -> list[Cascade]:
    from dataclasses import replace

    long_members = [e for e in liqs if e.cascade_id == HISTORY_CASCADE_LONG]
    short_members = [e for e in liqs if e.cascade_id == HISTORY_CASCADE_SHORT]
    return [
        replace(cascade_of(long_members, HISTORY_CASCADE_LONG), risk_score=80),
        replace(cascade_of(short_members, HISTORY_CASCADE_SHORT), risk_score=45),
    ]


def seed_history(database_url: str) -> list[Liquidation]:
    """Write the history dataset (liquidations + rollups, cascades, candles); return the liquidations."""
    liqs = history_liquidations()
    insert_liquidations(database_url, liqs)
    insert_cascades(database_url, history_cascades(liqs))
    insert_candles(database_url, history_candles())
    return liqs


def history_select(
    liqs: Iterable[Liquidation],
    start_ms: int = HISTORY_START_MS,
    end_ms: int = HISTORY_START_MS + HISTORY_DAYS * 86_400_000,
    symbol: str | None = "BTCUSDT",
    exchanges: Sequence[str] = ("binance", "bybit"),
    include_nonlive: bool = False,
    side: str | None = None,
) -> list[Liquidation]:
    """The seeded liquidations a scope selects, computed in Python (the expected answer)."""
    return [
        e
        for e in liqs
        if start_ms <= e.time_ms < end_ms
        and (symbol is None or e.symbol == symbol)
        and e.exchange in exchanges
        and (include_nonlive or e.source == "live")
        and (side is None or e.side == side)
    ]


def fq(
    symbol: str | None,
    exchanges: Sequence[str] = venues.NAMES,
    live_only: bool = True,
    side: str | None = None,
    min_usd: Decimal | int = 0,
) -> Query:
    """The Query of one venue symbol on the given venues (as old links' `symbol=` mean it), or of
    the whole market (None)."""
    target = all_target() if symbol is None else symbol_target(symbol, Catalog(), tuple(exchanges))
    return Query(
        target=target, exchanges=tuple(exchanges), include_nonlive=not live_only, side=side, min_usd=Decimal(min_usd)
    )


def sq(
    start_ms: int,
    end_ms: int,
    symbol: str | None = "BTCUSDT",
    exchanges: Sequence[str] = venues.NAMES,
    include_nonlive: bool = False,
) -> tuple[Query, int, int]:
    """(query, start, end): what the page data functions take after the pool."""
    return fq(symbol, exchanges, live_only=not include_nonlive), start_ms, end_ms
