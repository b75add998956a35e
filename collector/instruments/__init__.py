"""Instrument discovery: every venue's list of linear USDT and USDC contracts, from its public REST API.

One module per venue, shaped alike (`binance`, `bybit`, `okx`, `gate`, `bitget`): the REST path, a typed raw schema with the
venue's field names and `to_instrument()` into `common.instruments.Instrument`, `parse_*()` for a
decoded response and `fetch(base_url, timeout_s)`. `VENUES` is the registry; `catalog` holds the
current lists and refreshes them, `store` keeps them in TimescaleDB (`instruments`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from collector.instruments import binance, bitget, bybit, gate, okx
from collector.instruments.base import FetchError, InstrumentsError, Listing, ResponseError
from common.config import Settings


@dataclass(frozen=True)
class Venue:
    fetch: Callable[[str, float], Awaitable[Listing]]  # (base URL, timeout per request) -> the whole list
    base_url: Callable[[Settings], str]  # the configured REST base URL


VENUES: dict[str, Venue] = {
    binance.EXCHANGE: Venue(binance.fetch, binance.base_url),
    bybit.EXCHANGE: Venue(bybit.fetch, bybit.base_url),
    okx.EXCHANGE: Venue(okx.fetch, okx.base_url),
    gate.EXCHANGE: Venue(gate.fetch, gate.base_url),
    bitget.EXCHANGE: Venue(bitget.fetch, bitget.base_url),
}

__all__ = ["VENUES", "FetchError", "InstrumentsError", "Listing", "ResponseError", "Venue"]
