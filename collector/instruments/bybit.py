"""Bybit v5 linear: the instrument list from `GET /v5/market/instruments-info?category=linear`, page by page.

A real response (one page), cut to the fields we read (the real items also carry `priceFilter`,
`lotSizeFilter`, `leverageFilter`, funding fields...; see tests/fakes/rest.py for complete ones):

    {"retCode": 0, "retMsg": "OK",
     "result": {"category": "linear", "nextPageCursor": "first%3D10000LADYSUSDT%26last%3DBTCPERP",
       "list": [
         {"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
          "quoteCoin": "USDT", "settleCoin": "USDT", "launchTime": "1585526400000", "deliveryTime": "0", ...},
         {"symbol": "BTCPERP", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
          "quoteCoin": "USDC", "settleCoin": "USDC", "deliveryTime": "0", ...},
         {"symbol": "BTCUSDT-26DEC25", "contractType": "LinearFutures", "status": "Trading", "baseCoin": "BTC",
          "quoteCoin": "USDT", "settleCoin": "USDT", "deliveryTime": "1766736000000", ...},
         {"symbol": "1000PEPEUSDT", "baseCoin": "1000PEPE", ...},
         {"symbol": "SHIB1000USDT", "baseCoin": "SHIB1000", ...}]},
     "retExtInfo": {}, "time": 1732400000000}

Pagination: at most `limit=1000` items a page (500 by default; the linear category has more than
500 symbols); `nextPageCursor` is passed back as `cursor` until it is empty. A page may carry a
cursor and the next one be empty, so an empty page ends the list too; a cursor seen twice, or more
than `MAX_PAGES` pages, is a broken pagination (`ResponseError`). Without a `status` filter Bybit
returns `Trading` symbols only.

Followed: `contractType` LinearPerpetual (perpetual) and LinearFutures (dated, expiry the UTC day
of `deliveryTime`), `status` Trading, quote and settle coin USDT or USDC (USDC perpetuals are named
`BTCPERP`, USDC futures `BTC-26DEC25`). Multiplier coins carry their multiplier in `baseCoin`,
in front (`1000PEPE`, `10000SATS`) or, for SHIB, behind (`SHIB1000`): both are read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from collector.instruments.base import (
    QUOTES,
    Excluded,
    Invalid,
    Listing,
    ResponseError,
    check_coin,
    check_symbol,
    day_of_ms,
    ms_field,
    text_field,
)
from collector.instruments.http import get_json
from common.config import Settings
from common.instruments import DATED, PERPETUAL, Instrument, expiry_day, split_multiplier

EXCHANGE = "bybit"
PATH = "/v5/market/instruments-info"
CATEGORY = "linear"
PAGE_LIMIT = 1000  # the most Bybit gives per page
MAX_PAGES = 50  # 50,000 instruments: far beyond any real list
TRADING = "Trading"
_CONTRACT_TYPES = {"LinearPerpetual": PERPETUAL, "LinearFutures": DATED}


def base_url(settings: Settings) -> str:
    return settings.rest_url(EXCHANGE)


@dataclass(frozen=True, slots=True)
class BybitInstrument:
    """One item of instruments-info's `result.list` (category linear), with Bybit's field names."""

    symbol: str  # the venue symbol, as the topics name it: "BTCUSDT", "BTCPERP", "BTCUSDT-26DEC25"
    contractType: str  # LinearPerpetual | LinearFutures (Inverse* never on the linear category)
    status: str  # Trading (PreLaunch, Delivering, Closed only when asked for)
    baseCoin: str  # "BTC", "1000PEPE", "SHIB1000" (the multiplier is part of the name)
    quoteCoin: str  # "USDT", "USDC"
    settleCoin: str  # "USDT", "USDC"
    deliveryTime: int  # ms, sent as a string: the delivery of a dated contract, a perpetual's delisting, or 0

    @classmethod
    def parse(cls, raw: object) -> BybitInstrument:
        """The typed item, or `Invalid` naming what is wrong with it."""
        if not isinstance(raw, dict):
            raise Invalid("bad_item", "not an object")
        return cls(
            symbol=text_field(raw, "symbol"),
            contractType=text_field(raw, "contractType"),
            status=text_field(raw, "status"),
            baseCoin=text_field(raw, "baseCoin"),
            quoteCoin=text_field(raw, "quoteCoin"),
            settleCoin=text_field(raw, "settleCoin"),
            deliveryTime=ms_field(raw, "deliveryTime", as_text=True),
        )

    def to_instrument(self) -> Instrument:
        """Normalise: `Excluded` when we do not follow it, `Invalid` when its values make no sense."""
        symbol = check_symbol(self.symbol)
        if self.status != TRADING:
            raise Excluded("not_trading")
        contract_type = _CONTRACT_TYPES.get(self.contractType)
        if contract_type is None:
            raise Excluded("contract_type")
        if self.quoteCoin not in QUOTES or self.settleCoin not in QUOTES:
            raise Excluded("not_linear_usdt_usdc")
        base, multiplier = coin_multiplier(check_coin(self.baseCoin, "baseCoin"))
        return Instrument(
            exchange=EXCHANGE,
            symbol=symbol,
            base=check_coin(base, "baseCoin"),
            quote=self.quoteCoin,
            contract_type=contract_type,
            multiplier=multiplier,
            expiry=self._expiry() if contract_type == DATED else "",
            status=self.status.lower(),
        )

    def _expiry(self) -> str:
        if self.deliveryTime > 0:
            return day_of_ms(self.deliveryTime)
        _, sep, suffix = self.symbol.rpartition("-")  # BTCUSDT-26DEC25
        day = expiry_day(suffix) if sep else ""
        if len(day) != 8 or not day.isdigit():
            raise Invalid("bad_expiry", "a dated contract without a delivery time")
        return day


def coin_multiplier(coin: str) -> tuple[str, Decimal]:
    """`1000PEPE` -> (PEPE, 1000) as everywhere, and Bybit's `SHIB1000` -> (SHIB, 1000)
    (`common.instruments.split_multiplier` reads both)."""
    return split_multiplier(coin)


def parse_page(data: Any, listing: Listing) -> str:
    """Add one decoded page's items to `listing`; return its `nextPageCursor` ("" at the end)."""
    if not isinstance(data, dict):
        raise ResponseError("instruments-info: not a JSON object")
    if data.get("retCode") != 0:
        raise ResponseError(f"instruments-info: Bybit retCode {data.get('retCode')!r}: {str(data.get('retMsg'))[:200]}")
    result = data.get("result")
    items = result.get("list") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(items, list):
        raise ResponseError("instruments-info: no `result.list` array")
    cursor = result.get("nextPageCursor") or ""
    if not isinstance(cursor, str):
        raise ResponseError("instruments-info: `nextPageCursor` is not a string")
    for raw in items:
        try:
            listing.add(BybitInstrument.parse(raw).to_instrument())
        except Invalid as exc:
            listing.skip(exc, raw.get("symbol") if isinstance(raw, dict) else raw)
        except Excluded as exc:
            listing.exclude(exc)
    return cursor if items else ""


async def fetch(base: str, timeout_s: float, *, limit: int = PAGE_LIMIT) -> Listing:
    """Every page of the linear list, each under `timeout_s`; all or nothing."""
    listing = Listing(EXCHANGE, pages=0)
    seen: set[str] = set()
    cursor = ""
    while True:
        params = {"category": CATEGORY, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        url = f"{base.rstrip('/')}{PATH}?{urlencode(params)}"
        cursor = await get_json(url, timeout_s, functools.partial(parse_page, listing=listing))
        listing.pages += 1
        if not cursor:
            break
        if cursor in seen or listing.pages >= MAX_PAGES:
            raise ResponseError(f"instruments-info: pagination does not end (page {listing.pages})")
        seen.add(cursor)
    if not listing.instruments:
        raise ResponseError("instruments-info: no followed contract in the linear list")
    return listing
