"""Parse, then normalise: each venue's raw items (shaped like the real responses) into exact Instruments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from collector.instruments import binance, bybit
from collector.instruments.base import Listing, ResponseError
from common.instruments import DATED, PERPETUAL, Instrument
from tests.fakes.rest import binance_symbol, bybit_instrument, exchange_info

# Bybit's documented answer for BTCUSDT (bybit-exchange/docs v5/market/instrument.mdx), verbatim.
BYBIT_BTCUSDT: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "symbolId": 5,
    "contractType": "LinearPerpetual",
    "status": "Trading",
    "baseCoin": "BTC",
    "quoteCoin": "USDT",
    "launchTime": "1585526400000",
    "deliveryTime": "0",
    "deliveryFeeRate": "",
    "priceScale": "2",
    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
    "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
    "lotSizeFilter": {
        "maxOrderQty": "1190.000",
        "minOrderQty": "0.001",
        "qtyStep": "0.001",
        "postOnlyMaxOrderQty": "1190.000",
        "maxMktOrderQty": "500.000",
        "minNotionalValue": "5",
    },
    "unifiedMarginTrade": True,
    "fundingInterval": 480,
    "settleCoin": "USDT",
    "copyTrading": "both",
    "upperFundingRate": "0.00375",
    "lowerFundingRate": "-0.00375",
    "isPreListing": False,
    "preListingInfo": None,
    "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
    "symbolType": "",
}
DEC26_2025 = 1766736000000  # 2025-12-26 08:00 UTC, the quarterly delivery


def _b(symbol: str, base: str, quote: str = "USDT", **kw: Any) -> Instrument:
    return Instrument(
        **{"exchange": "binance", "symbol": symbol, "base": base, "quote": quote, "contract_type": PERPETUAL, **kw}
    )


def _y(symbol: str, base: str, quote: str = "USDT", **kw: Any) -> Instrument:
    return Instrument(
        **{"exchange": "bybit", "symbol": symbol, "base": base, "quote": quote, "contract_type": PERPETUAL, **kw}
    )


def test_binance_parse_keeps_the_venue_fields() -> None:
    raw = binance_symbol("1000PEPEUSDT", "1000PEPE")
    assert binance.BinanceSymbol.parse(raw) == binance.BinanceSymbol(
        symbol="1000PEPEUSDT",
        pair="1000PEPEUSDT",
        contractType="PERPETUAL",
        status="TRADING",
        baseAsset="1000PEPE",
        quoteAsset="USDT",
        marginAsset="USDT",
        deliveryDate=4133404800000,
    )


def test_binance_exchange_info_normalises_to_exact_instruments() -> None:
    bad_field = binance_symbol("ETHUSDT", "ETH")
    bad_field["deliveryDate"] = "4133404800000"  # a string where Binance writes a number
    missing = binance_symbol("SOLUSDT", "SOL")
    del missing["baseAsset"]
    data = exchange_info(
        [
            binance_symbol("BTCUSDT", "BTC"),
            binance_symbol("1000PEPEUSDT", "1000PEPE"),
            binance_symbol("1MBABYDOGEUSDT", "1MBABYDOGE"),
            binance_symbol(
                "BTCUSDT_251226", "BTC", contract_type="CURRENT_QUARTER", delivery_ms=DEC26_2025, pair="BTCUSDT"
            ),
            binance_symbol("币安人生USDT", "币安人生"),
            binance_symbol("BTCUSDC", "BTC", "USDC"),
            binance_symbol("TSLAUSDT", "TSLA", contract_type="TRADIFI_PERPETUAL"),
            binance_symbol("NEWUSDT", "NEW", status="PENDING_TRADING"),
            binance_symbol("OLDUSDT", "OLD", status="SETTLING"),
            binance_symbol("BTCBUSD", "BTC", "BUSD"),
            binance_symbol("BAD SYMBOLUSDT", "BAD"),
            binance_symbol("X<b>USDT", "X"),
            "BTCUSDT",
            bad_field,
            missing,
        ]
    )
    listing = binance.parse_exchange_info(data)
    assert listing.instruments == {
        "BTCUSDT": _b("BTCUSDT", "BTC"),
        "1000PEPEUSDT": _b("1000PEPEUSDT", "PEPE", multiplier=Decimal(1000)),
        "1MBABYDOGEUSDT": _b("1MBABYDOGEUSDT", "BABYDOGE", multiplier=Decimal(1_000_000)),
        "BTCUSDT_251226": Instrument(
            exchange="binance",
            symbol="BTCUSDT_251226",
            base="BTC",
            quote="USDT",
            contract_type=DATED,
            expiry="20251226",
        ),
        "币安人生USDT": _b("币安人生USDT", "币安人生"),
        "BTCUSDC": _b("BTCUSDC", "BTC", "USDC"),
        "TSLAUSDT": _b("TSLAUSDT", "TSLA"),
    }
    assert listing.invalid == {"bad_symbol": 2, "bad_item": 1, "bad_field": 2}
    assert listing.excluded == {"not_trading": 2, "not_linear_usdt_usdc": 1}
    assert "'BAD SYMBOLUSDT'" in listing.examples[0]
    assert listing.summary().startswith("7 instruments (5 skipped: bad_field 2, bad_item 1, bad_symbol 2, e.g. ")


def test_bybit_parse_keeps_the_venue_fields() -> None:
    assert bybit.BybitInstrument.parse(BYBIT_BTCUSDT) == bybit.BybitInstrument(
        symbol="BTCUSDT",
        contractType="LinearPerpetual",
        status="Trading",
        baseCoin="BTC",
        quoteCoin="USDT",
        settleCoin="USDT",
        deliveryTime=0,
    )


def test_bybit_page_normalises_to_exact_instruments() -> None:
    bad_time = bybit_instrument("ETHUSDT-26DEC25", "ETH", contract_type="LinearFutures")
    bad_time["deliveryTime"] = "soon"
    page = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "category": "linear",
            "list": [
                BYBIT_BTCUSDT,
                bybit_instrument("BTCPERP", "BTC", "USDC"),
                bybit_instrument("BTCUSDT-26DEC25", "BTC", contract_type="LinearFutures", delivery_ms=DEC26_2025),
                bybit_instrument("BTC-26DEC25", "BTC", "USDC", contract_type="LinearFutures", delivery_ms=DEC26_2025),
                bybit_instrument("1000PEPEUSDT", "1000PEPE"),
                bybit_instrument("SHIB1000USDT", "SHIB1000"),
                bybit_instrument("10000SATSUSDT", "10000SATS"),
                bybit_instrument("币安人生USDT", "币安人生"),
                bybit_instrument("NEWUSDT", "NEW", status="PreLaunch"),
                bybit_instrument("BTCUSD", "BTC", "USD", contract_type="InversePerpetual", settle="BTC"),
                bybit_instrument("ETH USDT", "ETH"),
                bad_time,
            ],
            "nextPageCursor": "first%3DBTCUSDT%26last%3DETHUSDT-26DEC25",
        },
        "retExtInfo": {},
        "time": 1735809771618,
    }
    listing = Listing("bybit")
    assert bybit.parse_page(page, listing) == "first%3DBTCUSDT%26last%3DETHUSDT-26DEC25"
    assert listing.instruments == {
        "BTCUSDT": _y("BTCUSDT", "BTC"),
        "BTCPERP": _y("BTCPERP", "BTC", "USDC"),
        "BTCUSDT-26DEC25": _y("BTCUSDT-26DEC25", "BTC", contract_type=DATED, expiry="20251226"),
        "BTC-26DEC25": _y("BTC-26DEC25", "BTC", "USDC", contract_type=DATED, expiry="20251226"),
        "1000PEPEUSDT": _y("1000PEPEUSDT", "PEPE", multiplier=Decimal(1000)),
        "SHIB1000USDT": _y("SHIB1000USDT", "SHIB", multiplier=Decimal(1000)),
        "10000SATSUSDT": _y("10000SATSUSDT", "SATS", multiplier=Decimal(10000)),
        "币安人生USDT": _y("币安人生USDT", "币安人生"),
    }
    assert listing.invalid == {"bad_symbol": 1, "bad_field": 1}
    assert listing.excluded == {"not_trading": 1, "contract_type": 1}


def test_the_same_contract_joins_across_venues() -> None:
    b = binance.parse_exchange_info(
        exchange_info(
            [
                binance_symbol("1000SHIBUSDT", "1000SHIB"),
                binance_symbol(
                    "BTCUSDT_251226", "BTC", contract_type="CURRENT_QUARTER", delivery_ms=DEC26_2025, pair="BTCUSDT"
                ),
            ]
        )
    ).instruments
    y = Listing("bybit")
    bybit.parse_page(
        {
            "retCode": 0,
            "result": {
                "list": [
                    bybit_instrument("SHIB1000USDT", "SHIB1000"),
                    bybit_instrument("BTCUSDT-26DEC25", "BTC", contract_type="LinearFutures", delivery_ms=DEC26_2025),
                ],
                "nextPageCursor": "",
            },
        },
        y,
    )
    assert b["1000SHIBUSDT"].canonical == y.instruments["SHIB1000USDT"].canonical == "SHIB-USDT-PERP"
    assert b["1000SHIBUSDT"].multiplier == y.instruments["SHIB1000USDT"].multiplier == 1000
    assert b["BTCUSDT_251226"].canonical == y.instruments["BTCUSDT-26DEC25"].canonical == "BTC-USDT-20251226"


def test_a_dated_contract_without_a_delivery_date_reads_its_name() -> None:
    listing = binance.parse_exchange_info(
        exchange_info([binance_symbol("ETHUSDT_260327", "ETH", contract_type="NEXT_QUARTER", delivery_ms=0)])
    )
    assert listing.instruments["ETHUSDT_260327"].expiry == "20260327"
    y = Listing("bybit")
    bybit.parse_page(
        {
            "retCode": 0,
            "result": {"list": [bybit_instrument("ETH-27MAR26", "ETH", "USDC", contract_type="LinearFutures")]},
        },
        y,
    )
    assert y.instruments["ETH-27MAR26"].expiry == "20260327"


def test_a_duplicate_symbol_is_counted_once() -> None:
    listing = binance.parse_exchange_info(exchange_info([binance_symbol("BTCUSDT", "BTC")] * 2))
    assert list(listing.instruments) == ["BTCUSDT"]
    assert listing.invalid == {"duplicate": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a JSON object"),
        ({"code": -1121, "msg": "Invalid symbol."}, "Binance error -1121"),
        ({"timezone": "UTC"}, "no `symbols` array"),
        (exchange_info([]), "no followed contract"),
        (exchange_info([binance_symbol("BTCBUSD", "BTC", "BUSD")]), "no followed contract among 1"),
    ],
)
def test_an_unusable_binance_answer_is_a_response_error(data: Any, message: str) -> None:
    with pytest.raises(ResponseError, match=message):
        binance.parse_exchange_info(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("OK", "not a JSON object"),
        ({"retCode": 10006, "retMsg": "Too many visits!", "result": {}}, "retCode 10006: Too many visits"),
        ({"retCode": 0, "retMsg": "OK", "result": {"category": "linear"}}, "no `result.list`"),
        ({"retCode": 0, "result": {"list": [], "nextPageCursor": 7}}, "not a string"),
    ],
)
def test_an_unusable_bybit_page_is_a_response_error(data: Any, message: str) -> None:
    with pytest.raises(ResponseError, match=message):
        bybit.parse_page(data, Listing("bybit"))


def test_an_empty_bybit_page_ends_the_list_whatever_its_cursor() -> None:
    listing = Listing("bybit")
    assert (
        bybit.parse_page({"retCode": 0, "result": {"list": [], "nextPageCursor": "first%3DA%26last%3DB"}}, listing)
        == ""
    )
    assert listing.instruments == {}
