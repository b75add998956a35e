"""Bitget UTA instruments: raw items (shaped like the documented answer) into exact Instruments, and
the two-category fetch over real HTTP from the fake venue, with every way to fail."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from collector.instruments import bitget
from collector.instruments.base import FetchError, Listing, ResponseError
from common.instruments import BASE_UNIT, DATED, PERPETUAL, Instrument
from tests.fakes.bitget import FakeBitgetRest, bitget_instrument, bitget_market

DEC26_2025 = 1766736000000  # 2025-12-26 08:00 UTC


def _g(symbol: str, base: str, quote: str = "USDT", **kw: Any) -> Instrument:
    return Instrument(
        **{"exchange": "bitget", "symbol": symbol, "base": base, "quote": quote, "contract_type": PERPETUAL, **kw}
    )


def _answer(*items: Any) -> dict[str, Any]:
    return {"code": "00000", "msg": "success", "requestTime": 1770531054230, "data": list(items)}


def test_parse_then_normalise_to_exact_instruments() -> None:
    listing = Listing("bitget")
    bitget.parse_response(
        _answer(
            bitget_instrument("BTCUSDT", "BTC"),
            bitget_instrument("BTCPERP", "BTC", "USDC"),
            bitget_instrument("1000SATSUSDT", "1000SATS", status="limit_open"),
            bitget_instrument("BTCUSDT1226", "BTC", kind="delivery", delivery_ms=DEC26_2025),
        ),
        listing,
    )
    assert listing.instruments == {
        "BTCUSDT": _g("BTCUSDT", "BTC", status="online"),
        "BTCPERP": _g("BTCPERP", "BTC", "USDC", status="online"),
        "1000SATSUSDT": _g("1000SATSUSDT", "SATS", multiplier=Decimal(1000), status="limit_open"),
        "BTCUSDT1226": _g("BTCUSDT1226", "BTC", contract_type=DATED, expiry="20251226", status="online"),
    }
    assert all(i.size_unit == BASE_UNIT and i.listed for i in listing.instruments.values())
    assert not listing.invalid and not listing.excluded


def test_what_is_not_followed_is_counted_and_malformed_items_skipped() -> None:
    listing = Listing("bitget")
    bitget.parse_response(
        _answer(
            bitget_instrument("NEWUSDT", "NEW", status="listed"),
            bitget_instrument("OLDUSDT", "OLD", status="offline"),
            bitget_instrument("BTCEUR", "BTC", "EUR", category="USDT-FUTURES"),
            bitget_instrument("ODDUSDT", "ODD", kind="spread"),
            bitget_instrument("BTCUSDT0327", "BTC", kind="delivery"),  # no delivery time
            {**bitget_instrument("BADUSDT", "BAD"), "symbol": 7},
            "not an item",
            bitget_instrument("ETHUSDT", "ETH"),
            bitget_instrument("ETHUSDT", "ETH"),
        ),
        listing,
    )
    assert list(listing.instruments) == ["ETHUSDT"]
    assert listing.excluded == {"not_trading": 2, "not_linear_usdt_usdc": 1, "contract_type": 1}
    assert listing.invalid == {"bad_expiry": 1, "bad_field": 1, "bad_item": 1, "duplicate": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a JSON object"),
        ({"code": "40808", "msg": "Too many requests"}, "Bitget code '40808': Too many requests"),
        ({"code": "00000", "msg": "success", "data": None}, "no `data` array"),
    ],
)
def test_unusable_answers_are_response_errors(data: Any, message: str) -> None:
    with pytest.raises(ResponseError, match=message):
        bitget.parse_response(data, Listing("bitget"))


@pytest.fixture
def rest() -> Iterator[FakeBitgetRest]:
    market = bitget_market(300) + [
        bitget_instrument("BTCPERP", "BTC", "USDC"),
        bitget_instrument("ETHPERP", "ETH", "USDC"),
    ]
    with FakeBitgetRest(market) as fake:
        yield fake


@pytest.mark.parametrize("zipped", [True, False])
async def test_fetch_reads_both_futures_categories(rest: FakeBitgetRest, zipped: bool) -> None:
    rest.gzip = zipped
    listing = await bitget.fetch(rest.url, 5)
    assert len(listing.instruments) == 302 and listing.pages == 2
    assert listing.instruments["BTCPERP"].quote == "USDC" and listing.instruments["QAAAUSDT"].base == "QAAA"
    assert rest.requests == [
        ("/api/v3/market/instruments", {"category": "USDT-FUTURES"}),
        ("/api/v3/market/instruments", {"category": "USDC-FUTURES"}),
    ]


@pytest.mark.parametrize(
    ("mode", "fail_from", "error", "message"),
    [
        ("error", 1, FetchError, "HTTP 500"),
        ("error", 2, FetchError, "HTTP 500"),  # the second category failing fails the whole list
        ("garbage", 1, ResponseError, "not JSON"),
        ("truncated", 1, FetchError, "incomplete answer"),
        ("venue_error", 2, ResponseError, "Bitget code '40808'"),
    ],
)
async def test_failures_are_clear_errors(
    rest: FakeBitgetRest, mode: str, fail_from: int, error: type[Exception], message: str
) -> None:
    rest.mode, rest.fail_from = mode, fail_from
    with pytest.raises(error, match=message):
        await bitget.fetch(rest.url, 5)


async def test_an_empty_list_is_an_error() -> None:
    with FakeBitgetRest([bitget_instrument("OLDUSDT", "OLD", status="offline")]) as fake:
        with pytest.raises(ResponseError, match="no followed contract"):
            await bitget.fetch(fake.url, 5)
