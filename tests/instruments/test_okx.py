"""OKX instruments: real-shaped answers parsed into exact instruments (contracts, ctVal, expiry),
inverse and not-live contracts excluded, and the fetch of both lists against the fake REST API."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from collector.instruments import okx
from collector.instruments.base import FetchError, Listing, ResponseError
from common.instruments import CONTRACTS, DATED, PERPETUAL, Instrument
from tests.exchanges.harness import adapter_settings
from tests.fakes.okx import FakeOkxRest, okx_instrument

EXPIRY_MS = 1766736000000  # 2025-12-26 08:00 UTC

SWAPS = [
    okx_instrument("BTC-USDT-SWAP", "0.01"),
    okx_instrument("ETH-USDT-SWAP", "0.1"),
    okx_instrument("BTC-USDC-SWAP", "0.0001"),
    okx_instrument("SATS-USDT-SWAP", "10000000", ct_val_ccy="1000SATS"),
    okx_instrument("BTC-USD-SWAP", "100", ct_type="inverse"),  # inverse: excluded
    okx_instrument("OLD-USDT-SWAP", "1", state="suspend"),  # not live: excluded
    okx_instrument("NEW-USDT-SWAP", "1", state="preopen"),  # not live yet: excluded
]
FUTURES = [
    okx_instrument("BTC-USDT-251226", "0.01", inst_type="FUTURES", exp_ms=EXPIRY_MS),
    okx_instrument("BTC-USD-251226", "100", inst_type="FUTURES", ct_type="inverse", exp_ms=EXPIRY_MS),
]


def _listing(items: list[object]) -> Listing:
    return okx.parse_instruments({"code": "0", "msg": "", "data": items}, Listing("okx"))


def test_linear_contracts_become_instruments_counted_in_contracts() -> None:
    listing = _listing([*SWAPS, *FUTURES])
    assert sorted(listing.instruments) == [
        "BTC-USDC-SWAP",
        "BTC-USDT-251226",
        "BTC-USDT-SWAP",
        "ETH-USDT-SWAP",
        "SATS-USDT-SWAP",
    ]
    assert listing.instruments["BTC-USDT-SWAP"] == Instrument(
        exchange="okx",
        symbol="BTC-USDT-SWAP",
        base="BTC",
        quote="USDT",
        contract_type=PERPETUAL,
        size_unit=CONTRACTS,
        contract_size=Decimal("0.01"),
        status="live",
    )
    assert listing.instruments["BTC-USDT-251226"] == Instrument(
        exchange="okx",
        symbol="BTC-USDT-251226",
        base="BTC",
        quote="USDT",
        contract_type=DATED,
        size_unit=CONTRACTS,
        contract_size=Decimal("0.01"),
        expiry="20251226",
        status="live",
    )
    usdc = listing.instruments["BTC-USDC-SWAP"]
    assert (usdc.quote, usdc.contract_size, usdc.canonical) == ("USDC", Decimal("0.0001"), "BTC-USDC-PERP")
    sats = listing.instruments["SATS-USDT-SWAP"]
    assert (sats.base, sats.multiplier, sats.contract_size) == ("SATS", Decimal(1000), Decimal("10000000"))
    assert listing.instruments["BTC-USDT-SWAP"].base_quantity(Decimal("25")) == Decimal("0.25")
    assert listing.excluded == {"not_linear_usdt_usdc": 2, "not_trading": 2} and not listing.invalid
    assert all(i.size_unit == CONTRACTS for i in listing.instruments.values())


def test_a_future_without_exp_time_reads_its_delivery_day_from_the_inst_id() -> None:
    item = okx_instrument("ETH-USDT-260327", "0.1", inst_type="FUTURES")
    assert _listing([item]).instruments["ETH-USDT-260327"].expiry == "20260327"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ctVal": "0"}, "bad_field"),
        ({"ctVal": "abc"}, "bad_field"),
        ({"ctVal": "1e3"}, "bad_field"),
        ({"ctVal": 0.01}, "bad_field"),
        ({"instId": "BTC USDT"}, "bad_symbol"),
        ({"ctValCcy": ""}, "bad_coin"),
        ({"state": None}, "bad_field"),
    ],
)
def test_a_malformed_item_is_skipped_and_counted(change: dict[str, object], reason: str) -> None:
    item = {**okx_instrument("BTC-USDT-SWAP", "0.01"), **change}
    listing = _listing([item, okx_instrument("ETH-USDT-SWAP", "0.1")])
    assert list(listing.instruments) == ["ETH-USDT-SWAP"] and listing.invalid == {reason: 1}


def test_an_error_answer_is_a_response_error() -> None:
    with pytest.raises(ResponseError, match="OKX code '51000'"):
        okx.parse_instruments({"code": "51000", "msg": "Parameter instType error", "data": []}, Listing("okx"))
    with pytest.raises(ResponseError, match="no `data` array"):
        okx.parse_instruments({"code": "0", "msg": ""}, Listing("okx"))


@pytest.fixture
def okx_rest() -> Iterator[FakeOkxRest]:
    with FakeOkxRest({"SWAP": SWAPS, "FUTURES": FUTURES}) as fake:
        yield fake


async def test_fetch_asks_for_swaps_and_futures(okx_rest: FakeOkxRest) -> None:
    listing = await okx.fetch(okx_rest.url, 5)
    assert len(listing.instruments) == 5 and listing.pages == 2
    assert okx_rest.requests == [
        ("/api/v5/public/instruments", {"instType": "SWAP"}),
        ("/api/v5/public/instruments", {"instType": "FUTURES"}),
    ]


@pytest.mark.parametrize(
    ("mode", "fail_from", "error", "message"),
    [
        ("error", 1, FetchError, "HTTP 500"),
        ("error", 2, FetchError, "HTTP 500"),  # the FUTURES list fails: nothing is returned
        ("garbage", 1, ResponseError, "not JSON"),
        ("truncated", 1, FetchError, "incomplete answer"),
        ("venue_error", 1, ResponseError, "OKX code '50011': Too Many Requests"),
    ],
)
async def test_failures_are_clear_errors(
    okx_rest: FakeOkxRest, mode: str, fail_from: int, error: type[Exception], message: str
) -> None:
    okx_rest.mode, okx_rest.fail_from = mode, fail_from
    with pytest.raises(error, match=message):
        await okx.fetch(okx_rest.url, 5)


async def test_an_empty_list_is_an_error(okx_rest: FakeOkxRest) -> None:
    okx_rest.instruments = {"SWAP": [SWAPS[4]], "FUTURES": []}
    with pytest.raises(ResponseError, match="no followed contract"):
        await okx.fetch(okx_rest.url, 5)


def test_base_url_follows_the_settings() -> None:
    settings = adapter_settings(LIQ_OKX_REST_URL="http://127.0.0.1:9/")
    assert okx.base_url(settings).rstrip("/") == "http://127.0.0.1:9"
