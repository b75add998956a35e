"""The whole-market generator (`gen_dataset --market`) at a small scale against a real TimescaleDB:
three days of 30 coins on five venues (one of them a market-wide burst day), a hundredth of the
year's event rate."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bench.gen_dataset import main, make_config
from bench.market_dataset import generate_market
from bench.market_universe import VENUES, MarketConfig, build_coins
from collector.cascades import CascadeDetector
from common.config import load_settings
from common.events import Cascade, Liquidation, Side
from common.instruments import guess_instrument
from tests import services

END = date(2025, 10, 12)
DAYS = 3
COINS = 30
CANDLE_COINS = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _config(scale: float = 0.01, seed: int = 5) -> MarketConfig:
    base = make_config(("BTCUSDT",), DAYS, seed, END, "test")
    return MarketConfig(COINS, DAYS, seed, base.start_ms, base.end_ms, "test", scale, CANDLE_COINS)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@pytest.fixture(scope="module")
def market_db(database_url: str) -> tuple[str, dict[str, float]]:
    services.truncate_all(database_url)
    totals = generate_market(database_url, _config(), workers=1)
    return database_url, totals


def test_counts_are_reported_and_scale_with_the_knob(market_db: tuple[str, dict[str, float]]) -> None:
    url, totals = market_db
    with psycopg.connect(url) as conn:
        for table in ("liquidations", "candles", "candles_1h", "cascades", "instruments", "stream_coverage"):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            assert row is not None and row[0] == totals[table] > 0, table
    assert totals["database_bytes"] > 0
    # --scale multiplies the rates: the same market at a tenth has about a tenth of the events
    small, big = build_coins(_config(0.001)), build_coins(_config(0.01))
    assert [c.base for c in small] == [c.base for c in big]
    assert sum(c.events_per_day for c in big) == pytest.approx(10 * sum(c.events_per_day for c in small))


def test_rollups_equal_the_raw_rows(market_db: tuple[str, dict[str, float]]) -> None:
    with psycopg.connect(market_db[0]) as conn:
        for table, width in (("liquidations_1m", "1 minute"), ("liquidations_1h", "1 hour")):
            raw = sql.SQL(
                """SELECT time_bucket({}, time), exchange, symbol, side, source, count(*),
                          sum(quantity), sum(value_usd), max(value_usd)
                   FROM liquidations GROUP BY 1, 2, 3, 4, 5"""
            ).format(sql.Literal(width))
            rollup = sql.SQL(
                "SELECT bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd FROM {}"
            ).format(sql.Identifier(table))
            assert not conn.execute(sql.SQL("({}) EXCEPT ({})").format(rollup, raw)).fetchall(), table
            assert not conn.execute(sql.SQL("({}) EXCEPT ({})").format(raw, rollup)).fetchall(), table


def test_instruments_cover_every_symbol_as_the_venues_spell_them(market_db: tuple[str, dict[str, float]]) -> None:
    with psycopg.connect(market_db[0]) as conn:
        instruments = {
            (ex, sym): (base, canonical, multiplier, unit, size)
            for ex, sym, base, canonical, multiplier, unit, size in conn.execute(
                "SELECT exchange, symbol, base, canonical, multiplier, size_unit, contract_size FROM instruments"
            )
        }
        used = set()
        for table in ("liquidations", "candles", "candles_1h"):
            query = sql.SQL("SELECT DISTINCT exchange, symbol FROM {}").format(sql.Identifier(table))
            used |= set(conn.execute(query).fetchall())
        # quantities in contracts' base units: a whole number of contracts
        off_lot = conn.execute(
            """SELECT count(*) FROM liquidations l JOIN instruments i USING (exchange, symbol)
               WHERE i.size_unit = 'contracts' AND l.quantity % i.contract_size <> 0"""
        ).fetchone()
    assert used <= set(instruments) and len(used) > 0.9 * len(instruments)
    assert off_lot == (0,)
    for (exchange, symbol), (base, canonical, multiplier, unit, size) in instruments.items():
        guessed = guess_instrument(exchange, symbol)  # what the collector joins on without a list
        assert (guessed.base, guessed.canonical, guessed.multiplier) == (base, canonical, multiplier)
        assert unit == ("contracts" if exchange in ("okx", "gate") else "base") and size > 0
    by_coin: dict[str, dict[str, str]] = defaultdict(dict)
    for (exchange, symbol), (base, *_) in instruments.items():
        by_coin[base][exchange] = symbol
    assert len(by_coin) == COINS
    assert by_coin["BTC"] == {
        "binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT-SWAP", "gate": "BTC_USDT", "bitget": "BTCUSDT"
    }  # fmt: skip
    assert set(by_coin["ETH"]) == set(VENUES)
    assert by_coin["PEPE"]["binance"] == "1000PEPEUSDT" and by_coin["SHIB"]["bybit"] == "SHIB1000USDT"
    assert any(len(v) < len(VENUES) for v in by_coin.values())  # the tail is listed on a subset


def test_coin_spread_btc_and_eth_lead(market_db: tuple[str, dict[str, float]]) -> None:
    with psycopg.connect(market_db[0]) as conn:
        rows = conn.execute(
            """SELECT i.base, sum(r.value_usd)::float8 FROM liquidations_1h r JOIN instruments i USING (exchange, symbol)
               GROUP BY 1 ORDER BY 2 DESC"""
        ).fetchall()
        prices = conn.execute("SELECT min(price), max(price) FROM liquidations").fetchone()
        per_day = conn.execute(
            "SELECT date_trunc('day', bucket), sum(value_usd)::float8 FROM liquidations_1h GROUP BY 1 ORDER BY 2"
        ).fetchall()
    total = sum(usd for _, usd in rows)
    assert [base for base, _ in rows[:2]] == ["BTC", "ETH"]
    assert (rows[0][1] + rows[1][1]) / total > 0.4
    assert rows[-1][1] < rows[0][1] / 50  # a long tail (at 30 coins; the 400th is far smaller)
    assert prices is not None and prices[0] < Decimal("0.01") and prices[1] > 50_000
    assert per_day[-1][1] > 5 * per_day[0][1]  # the market-wide burst day


def test_candles_minutes_for_the_leaders_hours_for_all(market_db: tuple[str, dict[str, float]]) -> None:
    with psycopg.connect(market_db[0]) as conn:
        aggregate = """SELECT time_bucket('1 hour', time), exchange, symbol,
                              (array_agg(open ORDER BY time))[1], max(high), min(low),
                              (array_agg(close ORDER BY time DESC))[1], sum(volume), sum(quote_volume),
                              count(*)::int, min(source)
                       FROM candles GROUP BY 1, 2, 3"""
        hourly = """SELECT time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source
                    FROM candles_1h WHERE symbol IN (SELECT DISTINCT symbol FROM candles)"""
        extra = conn.execute(sql.SQL("({}) EXCEPT ({})").format(sql.SQL(hourly), sql.SQL(aggregate))).fetchall()
        missing = conn.execute(sql.SQL("({}) EXCEPT ({})").format(sql.SQL(aggregate), sql.SQL(hourly))).fetchall()
        minute_coins = conn.execute(
            "SELECT DISTINCT i.base FROM candles c JOIN instruments i USING (exchange, symbol)"
        ).fetchall()
        hourly_listings = conn.execute("SELECT count(DISTINCT (exchange, symbol)) FROM candles_1h").fetchone()
        listings = conn.execute("SELECT count(*) FROM instruments").fetchone()
        bad = conn.execute(
            "SELECT count(*) FROM candles_1h WHERE low > least(open, close) OR high < greatest(open, close) OR minutes > 60"
        ).fetchone()
    assert not extra and not missing
    assert sorted(b for (b,) in minute_coins) == ["BTC", "ETH"]
    assert hourly_listings == listings and bad == (0,)


def test_rows_follow_each_venue(market_db: tuple[str, dict[str, float]]) -> None:
    with psycopg.connect(market_db[0]) as conn:
        combos = set(conn.execute("SELECT DISTINCT exchange, side, raw_side, sampled FROM liquidations"))
        bad = conn.execute("SELECT count(*) FROM liquidations WHERE value_usd <> quantity * price").fetchone()
        per_second = dict(
            conn.execute(
                """SELECT exchange, max(n) FROM (SELECT exchange, count(*) AS n FROM liquidations
                   GROUP BY exchange, symbol, side, date_trunc('second', time)) s GROUP BY 1"""
            ).fetchall()
        )
        gaps = conn.execute(
            """SELECT exchange, gap_start, gap_end FROM (
                 SELECT exchange, last_seen_at AS gap_start,
                        lead(connected_at) OVER (PARTITION BY exchange ORDER BY connected_at) AS gap_end
                 FROM stream_coverage) s WHERE gap_end IS NOT NULL"""
        ).fetchall()
        inside = 0
        for exchange, start, end in gaps:
            row = conn.execute(
                "SELECT count(*) FROM liquidations WHERE exchange = %s AND time >= %s AND time < %s",
                (exchange, start, end),
            ).fetchone()
            inside += row[0] if row else 0
    assert combos == {
        ("binance", "LONG", "SELL", True), ("binance", "SHORT", "BUY", True),
        ("bybit", "LONG", "Buy", False), ("bybit", "SHORT", "Sell", False),
        ("okx", "LONG", "sell", True), ("okx", "SHORT", "buy", True),
        ("gate", "LONG", "size<0", True), ("gate", "SHORT", "size>0", True),
        ("bitget", "LONG", "buy", True), ("bitget", "SHORT", "sell", True),
    }  # fmt: skip
    assert bad == (0,)
    # one per symbol and second (either side) on binance, okx and gate; one per side on bitget
    assert per_second["binance"] == per_second["okx"] == per_second["gate"] == per_second["bitget"] == 1
    assert per_second["bybit"] > 1  # the complete tape
    assert len(gaps) >= 5 and inside == 0


def _tape(url: str) -> list[Liquidation]:
    venue_order = {v: i for i, v in enumerate(VENUES)}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source,
                      sampled, event_key, cascade_id FROM liquidations"""
        ).fetchall()
    events = [
        Liquidation(r[1], r[2], Side(r[3]), r[4], r[5], r[6], _ms(r[0]), _ms(r[8]), r[7], r[9], r[10], r[11], r[12])
        for r in rows
    ]
    # as the collector receives them: by receive time, then exchange time, venue, side, price, size
    events.sort(
        key=lambda e: (e.received_ms, e.time_ms, venue_order[e.exchange], e.side == Side.LONG, e.price, e.quantity)
    )
    return events


def test_cascades_are_what_the_collector_detector_finds(market_db: tuple[str, dict[str, float]]) -> None:
    url = market_db[0]
    events = _tape(url)
    stored_ids = {e.key: e.cascade_id for e in events}
    per_instrument: dict[str, list[Liquidation]] = defaultdict(list)
    for ev in events:
        ev.cascade_id = None
        per_instrument[guess_instrument(ev.exchange, ev.symbol).canonical].append(ev)
    settings = load_settings(env={}, dotenv=None)  # the collector's defaults: rule "relative"
    assert settings.cascade_rule == "relative"
    found: dict[int, Cascade] = {}
    for evs in per_instrument.values():
        detector = CascadeDetector.from_settings(settings)  # one canonical instrument, every venue
        for ev in evs:
            for c in detector.process([ev], ev.received_ms).cascades:
                found[c.id] = c
        for c in detector.close_all():
            found[c.id] = c
    assert {e.key: e.cascade_id for e in events} == stored_ids
    with psycopg.connect(url) as conn:
        stored = {
            r[0]: r[1:]
            for r in conn.execute(
                """SELECT id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges,
                          events_by_exchange, usd_by_exchange, peak_minute, price_start, price_end, risk_score, active
                   FROM cascades"""
            )
        }
    expected: dict[int, tuple[Any, ...]] = {
        c.id: (
            c.symbol,
            str(c.side),
            datetime.fromtimestamp(c.start_ms / 1000, tz=UTC),
            datetime.fromtimestamp(c.end_ms / 1000, tz=UTC),
            c.count,
            c.quantity,
            c.value_usd,
            list(c.exchanges),
            c.counts,
            {k: f"{v:f}" for k, v in c.usd.items()},
            datetime.fromtimestamp(c.peak_minute_ms / 1000, tz=UTC),
            c.price_start,
            c.price_end,
            c.risk_score,
            False,
        )  # fmt: skip
        for c in found.values()
    }
    assert stored == expected
    assert len(stored) >= 20
    assert any(len(row[7]) >= 3 for row in stored.values())  # joined across venues' spellings
    assert any("okx" in row[7] and "binance" in row[7] for row in stored.values())
    assert {row[0] for row in stored.values()} >= {"BTC-USDT-PERP", "ETH-USDT-PERP"}


def test_cli_market_mode_refuses_a_filled_database(
    market_db: tuple[str, dict[str, float]], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--database-url", market_db[0], "--market", "--days", "1", "--coins", "5", "--scale", "0.001"]
    assert main([*args, "--end", END.strftime("%Y%m%d")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--coins", "0"]) == 1
    assert "--coins" in capsys.readouterr().err
