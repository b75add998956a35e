"""Cascades named after their canonical instrument (BTC-USDT-PERP) as the collector now writes
them: a venue symbol's filter finds them, and their price moves come from their members' venue
candles, per canonical base unit (a 1000PEPE close divided by 1000)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from psycopg_pool import ConnectionPool

from app.data import cascades
from app.data.rows import cascade_count
from app.query import Query, catalog_of, coin_target
from common.config import Settings
from tests.app.seed import (
    cascade_of,
    fq,
    insert_candles,
    insert_cascades,
    insert_liquidations,
    liq,
    make_candles,
    now_ms,
)

MIN = 60_000


def test_a_canonical_cascade_is_found_by_each_venue_symbol_and_priced_from_member_candles(
    settings: Settings, pool: ConnectionPool
) -> None:
    url = str(settings.database_url)
    t0 = now_ms() - 3 * 3_600_000
    t0 -= t0 % MIN
    btc = [
        liq("binance", "LONG", "1", "60000", t0 + 1_000, cascade_id=11),
        liq("bybit", "LONG", "2", "60010", t0 + 2_000, cascade_id=11),
    ]
    # 1000PEPEUSDT: the venue's price is per 1000 PEPE; the cascade's prices are per PEPE
    pepe = [liq("bybit", "SHORT", "5000", "0.012", t0 + 3_000, symbol="1000PEPEUSDT", cascade_id=22)]
    insert_liquidations(url, btc + pepe)
    btc_cascade = replace(cascade_of(btc, 11), symbol="BTC-USDT-PERP", price_end=Decimal("60010"))
    pepe_cascade = replace(cascade_of(pepe, 22), symbol="PEPE-USDT-PERP", price_end=Decimal("0.000012"))
    insert_cascades(url, [btc_cascade, pepe_cascade])
    insert_candles(url, make_candles("bybit", "BTCUSDT", t0, 90, price="60000", step="10"))
    insert_candles(url, make_candles("bybit", "1000PEPEUSDT", t0, 90, price="0.012", step="0.0001"))

    span = (t0 - 3_600_000, t0 + 3_600_000)
    frame = cascades.cascades(pool, fq("BTCUSDT", ("binance", "bybit")), *span)
    assert list(frame["id"]) == [11]
    # close of the minute 15 after the last member's minute, from bybit BTCUSDT: 60000 + 10 * 16
    assert frame["close_15m"].iloc[0] == Decimal("60160")
    assert cascade_count(pool, fq("BTCUSDT", ("binance", "bybit")), t0 - MIN, t0 + MIN) == 1
    assert cascade_count(pool, fq("ETHUSDT", ("binance", "bybit")), t0 - MIN, t0 + MIN) == 0
    # a coin finds the cascade of any of its contracts; ALL finds both cascades
    catalog = catalog_of(
        [("binance", "BTCUSDT", None), ("okx", "BTC-USDT-SWAP", None), ("bybit", "1000PEPEUSDT", None)]
    )
    btc_coin = Query(target=coin_target("BTC", catalog))
    assert cascade_count(pool, btc_coin, t0 - MIN, t0 + MIN) == 1
    assert cascade_count(pool, fq(None), t0 - MIN, t0 + MIN) == 2
    assert cascade_count(pool, replace(fq(None), side="SHORT"), t0 - MIN, t0 + MIN) == 1

    pepe_frame = cascades.cascades(pool, fq("1000PEPEUSDT", ("binance", "bybit")), *span)
    assert list(pepe_frame["id"]) == [22]
    after = Decimal("0.012") + Decimal("0.0001") * 16
    assert pepe_frame["close_15m"].iloc[0] == after / 1000  # per PEPE, like the cascade's price_end
    assert pepe_frame["move_15m_pct"].iloc[0] == (after / 1000 - Decimal("0.000012")) / Decimal("0.000012") * 100

    members = cascades.cascade_members(pool, 11, t0, t0 + MIN)
    candles = cascades.candles_between(pool, tuple(sorted(set(members["symbol"]))), t0, t0 + 5 * MIN, False)
    assert set(candles["exchange"]) == {"bybit"} and len(candles) == 5
