"""Market overview (app/data/market.py, app/pages/market.py, app/market_text.py): the figures of each
window (1, 4, 12, 24 h) equal the seeded rows exactly, from Redis for the live hour and from the
rollups plus raw edge minutes beyond, with coins joined across venue spellings.

Five venues, each with its own spelling: BTCUSDT, BTC-USDT-SWAP, BTC_USDT; 1000PEPEUSDT (Binance)
and PEPE-USDT-SWAP (OKX) are both PEPE; WEIRDUSDT is SOL because the `instruments` table says so.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import redis
from psycopg_pool import ConnectionPool
from streamlit.testing.v1 import AppTest

from app.data import market
from app.data.connections import open_pool, open_redis
from app.data.market import FEED_ROWS, CoinRow, FeedRow, MarketOverview, SideTotal, VenueRow, market_overview
from app.format import fmt_count, fmt_usd
from app.market_text import change_text, market_json, render_market
from common.config import Settings
from common.events import Liquidation
from common.live_view import Keys
from common.venues import lower_bound_note
from tests import services
from tests.app.seed import (
    ENTRY,
    all_text,
    app_env,
    insert_liquidations,
    liq,
    metric,
    no_exceptions,
    now_ms,
    redis_heartbeat,
    redis_liquidations,
)

HOUR = 3_600_000
MINUTE = 60_000
VENUES = ("binance", "bybit", "okx", "gate", "bitget")
COIN = {
    "BTCUSDT": "BTC",
    "BTC-USDT-SWAP": "BTC",
    "BTC_USDT": "BTC",
    "1000PEPEUSDT": "PEPE",
    "PEPE-USDT-SWAP": "PEPE",
    "ETHUSDT": "ETH",
    "ETH_USDT": "ETH",
    "SOLUSDT": "SOL",
    "WEIRDUSDT": "SOL",  # only the instruments table knows
}
SYMBOLS = {
    "binance": ("BTCUSDT", "1000PEPEUSDT"),
    "bybit": ("BTCUSDT", "ETHUSDT"),
    "okx": ("BTC-USDT-SWAP", "PEPE-USDT-SWAP"),
    "gate": ("BTC_USDT", "ETH_USDT"),
    "bitget": ("SOLUSDT", "WEIRDUSDT"),
}
PRICE = {"BTC": "90000", "ETH": "3000", "PEPE": "0.01", "SOL": "150"}


@pytest.fixture
def five(clean_db: str, redis_prefix: str, tmp_path: os.PathLike[str]) -> Settings:
    return services.make_settings(
        clean_db, redis_prefix, Path(tmp_path), LIQ_EXCHANGES=",".join(VENUES), LIQ_SYMBOLS="ALL"
    )


@pytest.fixture
def reader_pool(five: Settings) -> Iterator[ConnectionPool]:
    pool = open_pool(str(five.app_database_url))
    yield pool
    pool.close()


def _dataset(now: int) -> list[Liquidation]:
    """About 200 liquidations over the last 48 h on every venue, none within 30 s of a window edge,
    some non-live, some exactly at and just under the feed's 10,000 USD threshold."""
    rng = random.Random(12)
    edges = [now - h * HOUR for h in (1, 2, 4, 8, 12, 24, 48)]
    out: list[Liquidation] = []
    while len(out) < 200:
        t = now - rng.randrange(20_000, 48 * HOUR - 20_000)
        if any(abs(t - e) < 30_000 for e in edges):
            continue
        exchange = rng.choice(VENUES)
        symbol = rng.choice(SYMBOLS[exchange])
        coin = COIN[symbol]
        # 1000PEPEUSDT's price is per 1000 PEPE and its quantity counts thousands (as Binance sends it).
        price = Decimal(PRICE[coin]) * (1000 if symbol.startswith("1000") else 1)
        usd = Decimal(rng.randrange(100_000, 8_000_000)) / 100
        quantity = (usd / price).quantize(Decimal("0.0001"))
        source = "test" if rng.random() < 0.06 else "live"
        out.append(liq(exchange, rng.choice(("LONG", "SHORT")), str(quantity), str(price), t, symbol, source))
    # The feed threshold: exactly 10,000 is in, 9,999.99 is out.
    out.append(liq("bybit", "LONG", "1", "10000", now - 7 * MINUTE - 1, "BTCUSDT"))
    out.append(liq("okx", "SHORT", "1", "9999.99", now - 6 * MINUTE - 1, "BTC-USDT-SWAP"))
    out.append(liq("gate", "SHORT", "1", "10000", now - 3 * HOUR - 1, "BTC_USDT"))
    # SOL is new in the last hour: nothing in the hour before it.
    out.append(liq("bitget", "LONG", "100", "150", now - 11 * MINUTE, "SOLUSDT"))
    return [e for e in out if not (COIN[e.symbol] == "SOL" and HOUR <= now - e.time_ms < 2 * HOUR)]


def _edges(now: int) -> list[Liquidation]:
    """Rows right at the edges of every window of a fixed `now`: 1 ms inside and 1 ms outside, and in
    the open minute at the end (raw rows the rollups alone would miss or double)."""
    out = []
    for i, h in enumerate((1, 4, 12, 24)):
        start = now - h * HOUR
        out.append(liq("binance", "LONG", "0.5", str(80_000 + i), start, "BTCUSDT"))  # first ms: inside
        out.append(liq("bybit", "SHORT", "2", str(3_000 + i), start - 1, "ETHUSDT"))  # last ms before: outside
        out.append(liq("okx", "SHORT", "1000", f"0.01{i}", start - h * HOUR, "PEPE-USDT-SWAP"))  # previous window
    out.append(liq("gate", "LONG", "0.1", "90001", now - 1, "BTC_USDT"))  # last ms: inside
    out.append(liq("gate", "LONG", "0.1", "90002", now, "BTC_USDT"))  # `now` itself: outside
    return out


def _seed(settings: Settings, client: redis.Redis, liqs: Sequence[Liquidation], now: int) -> None:
    insert_liquidations(settings.database_url, liqs)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO instruments (exchange, symbol, base, quote, contract_type) "
            "VALUES ('bitget', 'WEIRDUSDT', 'SOL', 'USDT', 'perpetual')"
        )
    redis_liquidations(client, settings.redis_prefix, [e for e in liqs if e.time_ms > now - 62 * MINUTE])
    redis_heartbeat(client, settings.redis_prefix, now, exchanges=VENUES)


@dataclass
class Expected:
    events: dict[str, int] = field(default_factory=dict)  # LONG / SHORT
    usd: dict[str, Decimal] = field(default_factory=dict)
    venues: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    coins: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # long, short, largest, previous
    previous: Decimal = Decimal(0)
    feed: list[Liquidation] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum(self.usd.values(), Decimal(0))


def _expected(
    liqs: Sequence[Liquidation], now: int, hours: int, min_usd: Decimal = Decimal(10_000), nonlive: bool = False
) -> Expected:
    start = now - hours * HOUR
    chosen = [e for e in liqs if nonlive or e.source == "live"]
    current = [e for e in chosen if start <= e.time_ms < now]
    out = Expected(venues={v: (0, Decimal(0)) for v in VENUES})
    for e in current:
        side = str(e.side)
        out.events[side] = out.events.get(side, 0) + 1
        out.usd[side] = out.usd.get(side, Decimal(0)) + e.value_usd
        n, usd = out.venues[e.exchange]
        out.venues[e.exchange] = (n + 1, usd + e.value_usd)
        c = out.coins.setdefault(
            COIN[e.symbol], {"LONG": Decimal(0), "SHORT": Decimal(0), "largest": Decimal(0), "previous": Decimal(0)}
        )
        c[side] += e.value_usd
        c["largest"] = max(c["largest"], e.value_usd)
    for e in chosen:
        if start - hours * HOUR <= e.time_ms < start:
            out.previous += e.value_usd
            if COIN[e.symbol] in out.coins:
                out.coins[COIN[e.symbol]]["previous"] += e.value_usd
    big = [e for e in current if e.value_usd >= min_usd]
    out.feed = sorted(big, key=lambda e: (-e.time_ms, -e.value_usd))[:FEED_ROWS]
    return out


def _assert_equal(o: MarketOverview, want: Expected) -> None:
    assert (o.long.events, o.short.events) == (want.events.get("LONG", 0), want.events.get("SHORT", 0))
    assert (o.long.usd, o.short.usd) == (want.usd.get("LONG", 0), want.usd.get("SHORT", 0))
    assert o.usd == want.total and o.previous_usd == want.previous
    assert {v.exchange: (v.events, v.usd) for v in o.venues} == want.venues
    assert [v.usd for v in o.venues] == sorted((v.usd for v in o.venues), reverse=True)
    got = {
        c.coin: {"LONG": c.long_usd, "SHORT": c.short_usd, "largest": c.largest_usd, "previous": c.previous_usd}
        for c in o.coins
    }
    assert got == want.coins
    assert sum((c.usd for c in o.coins), Decimal(0)) == want.total
    assert [(r.time_ms, r.exchange, r.symbol, r.value_usd, r.quantity) for r in o.feed] == [
        (e.time_ms, e.exchange, e.symbol, e.value_usd, e.quantity) for e in want.feed
    ]


def test_overview_equals_the_rows_for_every_window(
    five: Settings, sync_redis: redis.Redis, reader_pool: ConnectionPool
) -> None:
    now = now_ms()
    now -= now % 10_000 - 4_321  # not on a bucket, a minute or an hour: every edge is a partial one
    liqs = _dataset(now) + _edges(now)
    _seed(five, sync_redis, liqs, now)
    client = open_redis(str(five.redis_url))
    try:
        for hours in (1, 4, 12, 24):
            for nonlive in (False, True):
                o = market_overview(
                    reader_pool, client, five.redis_prefix, hours, now, VENUES, nonlive, Decimal(10_000)
                )
                assert o.source == ("redis" if hours == 1 else "timescaledb"), o.source
                assert (o.start_ms, o.end_ms) == (now - hours * HOUR, now)
                _assert_equal(o, _expected(liqs, now, hours, nonlive=nonlive))
            o = market_overview(reader_pool, client, five.redis_prefix, hours, now, VENUES, False, 50_000)
            assert all(r.value_usd >= 50_000 for r in o.feed)
            _assert_equal(o, _expected(liqs, now, hours, Decimal(50_000)))
        # The live hour from TimescaleDB (no Redis) gives the very same overview.
        from_db = market_overview(reader_pool, None, five.redis_prefix, 1, now, VENUES, False, 10_000)
        from_redis = market_overview(reader_pool, client, five.redis_prefix, 1, now, VENUES, False, 10_000)
        assert from_db.source == "timescaledb"
        assert from_db.coins == from_redis.coins and from_db.venues == from_redis.venues
        assert from_db.feed == from_redis.feed
        # A live hour with more symbol buckets than MAX_SYMBOL_KEYS takes its coins from TimescaleDB.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(market, "MAX_SYMBOL_KEYS", 2)
            o = market_overview(reader_pool, client, five.redis_prefix, 1, now, VENUES, False, 10_000)
        assert (o.source, o.coins_source) == ("redis", "timescaledb (the live hour holds more than 2 symbol buckets)")
        _assert_equal(o, _expected(liqs, now, 1))
        # One venue only.
        o = market_overview(reader_pool, client, five.redis_prefix, 24, now, ("okx",), False, 10_000)
        assert [v.exchange for v in o.venues] == ["okx"]
        assert {c.coin for c in o.coins} <= {"BTC", "PEPE"}
        # Coins join across spellings; the link symbol is the venue symbol with the most USD.
        o = market_overview(reader_pool, client, five.redis_prefix, 24, now, VENUES, False, 10_000)
        pepe = next(c for c in o.coins if c.coin == "PEPE")
        assert set(pepe.symbols) == {"1000PEPEUSDT", "PEPE-USDT-SWAP"}
        assert "WEIRDUSDT" in next(c for c in o.coins if c.coin == "SOL").symbols
        assert all(c.symbol in c.symbols for c in o.coins)
    finally:
        client.close()


def test_a_view_not_built_reads_timescaledb(
    five: Settings, sync_redis: redis.Redis, reader_pool: ConnectionPool
) -> None:
    now = now_ms()
    liqs = _dataset(now)
    _seed(five, sync_redis, liqs, now)
    sync_redis.delete(Keys(five.redis_prefix).built)
    client = open_redis(str(five.redis_url))
    try:
        o = market_overview(reader_pool, client, five.redis_prefix, 1, now, VENUES, False, 10_000)
    finally:
        client.close()
    assert o.source.startswith("timescaledb (the Redis live view is not built")
    _assert_equal(o, _expected(liqs, now, 1))


def _open_market(params: dict[str, str]) -> AppTest:
    """The landing page: the frame's first run opens it."""
    at = AppTest.from_file(str(ENTRY), default_timeout=60)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def _table(at: AppTest, column: str) -> pd.DataFrame:
    """The one table whose first column is `column`."""
    found = [d.value for d in at.dataframe if d.value.columns[0] == column]
    assert len(found) == 1, (column, [list(d.value.columns) for d in at.dataframe])
    return found[0]


def test_market_page_shows_the_seeded_figures(
    five: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_ms()
    liqs = _dataset(now)
    _seed(five, sync_redis, liqs, now)
    app_env(monkeypatch, five)
    started = time.monotonic()
    for hours in (1, 4, 12, 24):
        at = _open_market({"window": str(hours), "exchanges": ",".join(VENUES)})
        no_exceptions(at)
        want = _expected(liqs, now, hours)
        assert metric(at, "Liquidations") == fmt_count(sum(want.events.values()))
        assert metric(at, "USD liquidated") == fmt_usd(want.total)
        assert metric(at, f"Previous {hours} h") == fmt_usd(want.previous)
        text = all_text(at)
        assert ("from redis" in text) == (hours == 1), text
        sides = _table(at, "Side")
        assert list(sides["USD"])[:2] == [fmt_usd(want.usd["LONG"]), fmt_usd(want.usd["SHORT"])]
        venues = _table(at, "Exchange")
        labels = {v: f"{v} (lower bound)" if v != "bybit" else v for v in VENUES}
        got = dict(zip(venues["Exchange"], zip(venues["Events"], venues["USD"], strict=True), strict=True))
        assert got == {labels[v]: (n, float(usd)) for v, (n, usd) in want.venues.items()}
        assert lower_bound_note([v for v, (n, _usd) in want.venues.items() if n]) in text
        coins = _table(at, "Coin")
        assert list(coins["Coin"]) == sorted(
            want.coins, key=lambda c: -(want.coins[c]["LONG"] + want.coins[c]["SHORT"])
        )
        for _, row in coins.iterrows():
            c = want.coins[row["Coin"]]
            total = c["LONG"] + c["SHORT"]
            assert (row["Longs USD"], row["Shorts USD"], row["Total USD"], row["Largest USD"]) == (
                float(c["LONG"]),
                float(c["SHORT"]),
                float(total),
                float(c["largest"]),
            )
            assert row["Share of market"] == pytest.approx(float(total / want.total * 100))
            assert row["Change"] == change_text(total, c["previous"])
            # the coin (every contract of it) over the overview's window
            assert row["Chart"].startswith("/chart?") and f"target={row['Coin']}&hours={hours}" in row["Chart"]
            assert (
                "exchanges=binance%2Cbybit%2Cokx%2Cgate%2Cbitget" not in row["Chart"]
            )  # the default is not in the URL
            assert row["Cascades"].startswith(f"/cascades?target={row['Coin']}&")
        if hours == 1:
            assert list(coins[coins["Coin"] == "SOL"]["Change"]) == ["new"]
        feed = _table(at, "Date")
        assert list(feed.columns) == ["Date", "Time (UTC)", "Exchange", "Symbol", "Side", "Amount (base)", "USD Value"]
        assert list(feed["USD Value"]) == [fmt_usd(e.value_usd) for e in want.feed]
        assert len(at.get("plotly_chart")) == 1
    assert time.monotonic() - started < 20


def test_market_page_search_threshold_links_and_nonlive(
    five: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_ms()
    liqs = _dataset(now)
    _seed(five, sync_redis, liqs, now)
    app_env(monkeypatch, five)
    at = _open_market({"window": "4", "feed_min": "50000", "exchanges": "okx,binance"})
    no_exceptions(at)
    want = _expected([e for e in liqs if e.exchange in ("okx", "binance")], now, 4, Decimal(50_000))
    assert metric(at, "USD liquidated") == fmt_usd(want.total)
    feed = _table(at, "Date")
    assert list(feed["USD Value"]) == [fmt_usd(e.value_usd) for e in want.feed]
    assert list(_table(at, "Exchange")["Exchange"]) == ["binance (lower bound)", "okx (lower bound)"] or list(
        _table(at, "Exchange")["Exchange"]
    ) == ["okx (lower bound)", "binance (lower bound)"]
    coins = _table(at, "Coin")
    assert set(coins["Coin"]) <= {"BTC", "PEPE"}
    pepe = coins[coins["Coin"] == "PEPE"].iloc[0]
    assert "exchanges=okx%2Cbinance" in pepe["Chart"] and "window" not in pepe["Chart"]
    assert "target=PEPE&hours=4" in pepe["Chart"] and "symbol=" not in pepe["Chart"]
    at.text_input(key="m_search").input("pepe").run()
    assert list(_table(at, "Coin")["Coin"]) == ["PEPE"]
    at.text_input(key="m_search").input("SWAP").run()
    assert set(_table(at, "Coin")["Coin"]) == {"BTC", "PEPE"}

    at = _open_market({"window": "24", "nonlive": "1"})
    no_exceptions(at)
    with_test = _expected(liqs, now, 24, nonlive=True).total
    assert with_test != _expected(liqs, now, 24).total
    assert metric(at, "USD liquidated") == fmt_usd(with_test)
    assert "TEST data — not live" in all_text(at)


def test_market_page_bad_window_and_empty(five: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    app_env(monkeypatch, five)
    at = _open_market({"window": "7", "feed_min": "1e400"})
    no_exceptions(at)
    text = all_text(at)
    assert "Ignored window='7'" in text
    assert "Ignored feed_min='1e400'" in text
    assert at.number_input(key="m_feed_min").value == 10_000
    assert "window" not in at.query_params and "feed_min" not in at.query_params
    assert "No liquidations in the last 24 h" in text


def _overview() -> MarketOverview:
    return MarketOverview(
        hours=1,
        start_ms=1_796_126_400_000,  # 20261201 12:00:00 UTC
        end_ms=1_796_130_000_000,
        exchanges=("binance", "bybit"),
        include_nonlive=False,
        source="redis",
        coins_source="redis",
        long=SideTotal(15, Decimal("560842")),
        short=SideTotal(9, Decimal("322438")),
        previous_usd=Decimal("441640"),
        venues=(VenueRow("binance", 14, Decimal("500000")), VenueRow("bybit", 10, Decimal("383280"))),
        coins=(
            CoinRow(
                "BTC",
                10,
                Decimal("500000"),
                4,
                Decimal("100000"),
                Decimal("90000"),
                Decimal("500000"),
                "BTCUSDT",
                "binance",
                ("BTCUSDT",),
            ),
            CoinRow(
                "PE\nPE",
                5,
                Decimal("60842"),
                5,
                Decimal("222438"),
                None,
                Decimal("0"),
                "1000PEPEUSDT",
                "binance",
                ("1000PEPEUSDT",),
            ),
        ),  # fmt: skip
        feed_min_usd=Decimal(10_000),
        feed=(
            FeedRow(1_796_129_999_000, "bybit", "BTCUSDT", "LONG", Decimal("1.5"), Decimal("90000"), Decimal("135000")),
        ),
    )


def test_render_market_lines() -> None:
    lines = render_market(_overview())
    assert lines[0] == "ALL · last 1 h · 20261201 12:00:00 UTC .. 20261201 13:00:00 UTC · from redis"
    assert "ALL: 24 events | $883,280.00 | 100.0% | previous window $441,640.00 (+100.0%)" in lines
    assert "LONG: 15 events | $560,842.00 | 63.5%" in lines
    assert "SHORT: 9 events | $322,438.00 | 36.5%" in lines
    assert "binance (lower bound): 14 events | $500,000.00 | 56.6%" in lines
    assert "bybit: 10 events | $383,280.00 | 43.4%" in lines
    assert (
        "BTC: 14 events | $600,000.00 | 67.9% | longs $500,000.00 | shorts $100,000.00 | largest $90,000.00 | +20.0%"
        in lines
    )
    assert "PE PE: 10 events | $283,280.00 | 32.1% | longs $60,842.00 | shorts $222,438.00 | largest n/a | new" in lines
    assert "20261201 12:59:59 UTC | bybit | BTCUSDT | LONG | 1.5000 | $135,000.00" in lines
    assert lines[-1] == f"note: {lower_bound_note(['binance'])}"
    assert not any("base" in line.lower() for line in lines[:4])  # no base amount for ALL


def test_market_json() -> None:
    data = market_json(_overview())
    assert data["total"] == {"events": 24, "usd": "883280", "previous_usd": "441640"}
    assert data["change"] == "+100.0%"
    assert data["by_side"]["LONG"] == {"events": 15, "usd": "560842", "share_pct": "63.5"}
    assert data["by_exchange"]["binance"]["lower_bound"] is True
    assert data["by_exchange"]["bybit"]["lower_bound"] is False
    assert [c["coin"] for c in data["coins"]] == ["BTC", "PE\nPE"]
    assert data["coins"][0]["change"] == "+20.0%" and data["coins"][1]["change"] == "new"
    assert data["coins"][1]["largest_usd"] is None
    assert data["feed"][0]["time"] == "20261201 12:59:59 UTC" and data["feed"][0]["usd"] == "135000"
    assert change_text(Decimal(50), Decimal(100)) == "-50.0%"
    assert data["by_exchange"]["bybit"]["usd"] == "383280" and data["feed_min_usd"] == "10000"


@pytest.mark.parametrize("offset_ms", [0, 1, 59_999, 60_000, 3_599_999])
def test_window_sums_whatever_segment_comes_first(
    five: Settings, sync_redis: redis.Redis, reader_pool: ConnectionPool, offset_ms: int
) -> None:
    """A window may start on an hour (rollups first), on a minute or between minutes (raw rows first):
    the sums are the same as the raw rows' in each case (the UNION's columns are named)."""
    hour = 3_600_000
    now = now_ms()
    start = now - now % hour - 3 * hour + offset_ms
    liqs = [liq("bybit", "LONG", "1", "100", start + i * 600_000 + 7, "BTCUSDT") for i in range(12)]
    insert_liquidations(five.database_url, liqs)
    (sums,) = market._db_sums(reader_pool, [(start, start + 2 * hour)], ("bybit",), True)
    acc = sums["bybit", "BTCUSDT", "LONG"]
    inside = [e for e in liqs if start <= e.time_ms < start + 2 * hour]
    assert (acc.events, acc.usd) == (len(inside), sum(e.value_usd for e in inside))
