"""Fetching the lists over real HTTP from the fake venues: pagination, gzip, and every way to fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from collector.instruments import binance, bybit
from collector.instruments.base import FetchError, ResponseError
from tests.e2e.own_servers import free_port
from tests.fakes.rest import (
    FakeBinanceRest,
    FakeBybitRest,
    binance_market,
    binance_symbol,
    bybit_instrument,
    bybit_market,
)


@pytest.fixture
def binance_rest() -> Iterator[FakeBinanceRest]:
    with FakeBinanceRest(binance_market(600) + [binance_symbol("1000PEPEUSDT", "1000PEPE")]) as fake:
        yield fake


@pytest.fixture
def bybit_rest() -> Iterator[FakeBybitRest]:
    with FakeBybitRest(bybit_market(650) + [bybit_instrument("BTCPERP", "BTC", "USDC")], page_size=100) as fake:
        yield fake


@pytest.mark.parametrize("zipped", [True, False])
async def test_binance_whole_list_in_one_request(binance_rest: FakeBinanceRest, zipped: bool) -> None:
    binance_rest.gzip = zipped
    listing = await binance.fetch(binance_rest.url, 5)
    assert len(listing.instruments) == 601 and listing.instruments["1000PEPEUSDT"].base == "PEPE"
    assert binance_rest.requests == [("/fapi/v1/exchangeInfo", {})]


@pytest.mark.parametrize("cursor_on_last_page", [True, False])
async def test_bybit_follows_the_cursor_over_every_page(bybit_rest: FakeBybitRest, cursor_on_last_page: bool) -> None:
    bybit_rest.cursor_on_last_page = cursor_on_last_page
    listing = await bybit.fetch(bybit_rest.url, 5)
    assert sorted(listing.instruments) == sorted(i["symbol"] for i in bybit_rest.instruments)
    assert listing.instruments["BTCPERP"].quote == "USDC"
    pages = 7 + cursor_on_last_page  # 651 items at 100 a page, and the empty page after a last cursor
    assert listing.pages == bybit_rest.count == pages
    first, *rest = bybit_rest.requests
    assert first == ("/v5/market/instruments-info", {"category": "linear", "limit": "1000"})
    # The cursor goes back exactly as Bybit wrote it (percent-encoded once more in the query).
    assert rest[0][1]["cursor"] == "first%3DQAAAUSDT%26last%3DQADVUSDT"


async def test_one_failing_page_fails_the_whole_list(bybit_rest: FakeBybitRest) -> None:
    bybit_rest.mode, bybit_rest.fail_from = "error", 4
    with pytest.raises(FetchError, match="HTTP 500"):
        await bybit.fetch(bybit_rest.url, 5)
    assert bybit_rest.count == 4


async def test_a_pagination_that_never_ends_is_refused() -> None:
    class Looping(FakeBybitRest):
        def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
            status, data = super().answer(path, {k: v for k, v in query.items() if k != "cursor"})
            return status, data  # always the first page, with the same cursor

    with Looping(bybit_market(20), page_size=10) as fake:
        with pytest.raises(ResponseError, match="pagination does not end"):
            await bybit.fetch(fake.url, 5)
        assert fake.count == 2


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("error", FetchError, "HTTP 500 Internal Server Error"),
        ("garbage", ResponseError, "not JSON .*502 Bad Gateway"),
        ("truncated", FetchError, "incomplete answer: the connection closed .* bytes short"),
        ("venue_error", FetchError, "HTTP 400 Bad Request: .*-1104"),
    ],
)
async def test_binance_failures_are_clear_errors(
    binance_rest: FakeBinanceRest, mode: str, error: type[Exception], message: str
) -> None:
    binance_rest.mode = mode
    with pytest.raises(error, match=message):
        await binance.fetch(binance_rest.url, 5)


async def test_bybit_own_error_code_is_a_response_error(bybit_rest: FakeBybitRest) -> None:
    bybit_rest.mode = "venue_error"
    with pytest.raises(ResponseError, match="retCode 10006: Too many visits"):
        await bybit.fetch(bybit_rest.url, 5)


async def test_a_venue_that_never_answers_fails_at_the_deadline(binance_rest: FakeBinanceRest) -> None:
    binance_rest.mode = "hang"
    started = time.monotonic()
    with pytest.raises(FetchError, match="no complete answer within 0.5 s"):
        await binance.fetch(binance_rest.url, 0.5)
    assert 0.4 < time.monotonic() - started < 3.0


async def test_a_venue_that_cannot_be_reached_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="cannot reach 127.0.0.1"):
        await bybit.fetch(f"http://127.0.0.1:{free_port()}", 2)


def test_a_request_in_flight_does_not_hold_up_the_event_loop_at_shutdown(binance_rest: FakeBinanceRest) -> None:
    binance_rest.mode = "hang"

    async def main() -> None:
        task = asyncio.create_task(binance.fetch(binance_rest.url, 30))
        await asyncio.sleep(0.2)
        task.cancel()  # a SIGTERM while the venue does not answer

    started = time.monotonic()
    asyncio.run(main())  # closes the loop and its executor
    assert time.monotonic() - started < 2
