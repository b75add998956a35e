"""Gate USDT perpetuals: the contract list parsed and normalised alone, then fetched over real HTTP from
the fake venue (limit/offset pagination, a server ignoring offset, every way to fail)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from collector.instruments import gate
from collector.instruments.base import FetchError, Invalid, Listing, ResponseError
from collector.instruments.gate import GateContract, parse_page
from common.config import load_settings
from common.instruments import CONTRACTS, PERPETUAL, Instrument
from tests.fakes.gate import FakeGateRest, gate_contract, gate_market


def test_a_contract_keeps_its_fields_and_becomes_an_instrument_in_contracts() -> None:
    contract = GateContract.parse(gate_contract("BTC_USDT", "0.0001"))
    assert contract == GateContract(
        name="BTC_USDT", type="direct", quanto_multiplier="0.0001", in_delisting=False, status="trading"
    )
    assert contract.to_instrument() == Instrument(
        exchange="gate",
        symbol="BTC_USDT",
        base="BTC",
        quote="USDT",
        contract_type=PERPETUAL,
        size_unit=CONTRACTS,
        contract_size=Decimal("0.0001"),
        status="trading",
    )
    pepe = GateContract.parse(gate_contract("1000BONK_USDT", "100", status=None)).to_instrument()
    assert (pepe.base, pepe.multiplier, pepe.contract_size, pepe.canonical) == (
        "BONK",
        Decimal(1000),
        Decimal(100),
        "BONK-USDT-PERP",
    )


def test_only_trading_linear_usdt_and_usdc_perpetuals_are_followed() -> None:
    listing = Listing("gate")
    seen: set[str] = set()
    items = [
        gate_contract("BTC_USDT"),
        gate_contract("ETH_USDC", "0.01"),
        gate_contract("BTC_USD", "1", kind="inverse"),
        gate_contract("OLD_USDT", in_delisting=True),
        gate_contract("NEW_USDT", status="prelaunch"),
        gate_contract("BTC_EUR"),
        gate_contract("BAD_USDT", "-1"),
        gate_contract("NAN_USDT", "NaN"),
        {"name": "X_USDT"},
        7,
    ]
    assert parse_page(items, listing, seen) == len(items)
    assert sorted(listing.instruments) == ["BTC_USDT", "ETH_USDC"]
    assert listing.excluded == {"not_linear_usdt_usdc": 2, "not_trading": 2}
    assert listing.invalid == {"bad_multiplier": 2, "bad_field": 1, "bad_item": 1}
    assert parse_page(items[:2], listing, seen) == 0  # the same page again: nothing new, the list ends
    with pytest.raises(Invalid):
        GateContract.parse({"name": "A_USDT", "type": "direct", "quanto_multiplier": "1", "in_delisting": "no"})


@pytest.fixture
def rest() -> Iterator[FakeGateRest]:
    with FakeGateRest([*gate_market(230), gate_contract("BTC_USD", "1", kind="inverse")], max_limit=100) as fake:
        yield fake


async def test_every_page_is_fetched_until_an_empty_one(rest: FakeGateRest) -> None:
    listing = await gate.fetch(rest.url, 5)
    assert len(listing.instruments) == 230 and listing.excluded == {"not_linear_usdt_usdc": 1}
    assert listing.pages == 4  # 100 + 100 + 31 items (the venue caps `limit`), then an empty page
    assert [q["offset"] for _, q in rest.requests] == ["0", "100", "200", "231"]
    assert {q["limit"] for _, q in rest.requests} == {"1000"}


async def test_a_server_ignoring_offset_ends_the_list_on_a_repeated_page(rest: FakeGateRest) -> None:
    rest.ignore_offset = True
    listing = await gate.fetch(rest.url, 5)
    assert len(listing.instruments) == 100 and listing.pages == 2 and not listing.invalid


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("error", FetchError, "HTTP 500"),
        ("garbage", ResponseError, "not JSON"),
        ("truncated", FetchError, "incomplete answer"),
        ("venue_error", FetchError, "HTTP 400 Bad Request: .*TOO_MANY_REQUESTS"),
    ],
)
async def test_failures_fail_the_whole_list(
    rest: FakeGateRest, mode: str, error: type[Exception], message: str
) -> None:
    rest.mode = mode
    with pytest.raises(error, match=message):
        await gate.fetch(rest.url, 5)


async def test_a_failure_midway_fails_the_whole_list_and_an_empty_list_is_an_error(rest: FakeGateRest) -> None:
    rest.mode, rest.fail_from = "error", 2
    with pytest.raises(FetchError, match="HTTP 500"):
        await gate.fetch(rest.url, 5)
    rest.mode, rest.contracts = "ok", [gate_contract("BTC_USD", "1", kind="inverse")]
    with pytest.raises(ResponseError, match="no followed contract"):
        await gate.fetch(rest.url, 5)


def test_the_base_url_comes_from_the_settings() -> None:
    settings = load_settings(env={"LIQ_GATE_REST_URL": "http://127.0.0.1:9/"}, dotenv=None)
    assert gate.base_url(settings).rstrip("/") == "http://127.0.0.1:9"
    assert gate.base_url(load_settings(env={}, dotenv=None)) == "https://api.gateio.ws"
