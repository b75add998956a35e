"""Bitget UTA: the instrument list from `GET /api/v3/market/instruments?category=USDT-FUTURES` (and USDC-FUTURES).

A real response (Bitget UTA "Get Instruments", futures), cut to the fields we read (the real items
also carry fee rates, order limits, leverage, funding interval...; see tests/fakes/bitget.py):

    {"code": "00000", "msg": "success", "requestTime": 1770531054230,
     "data": [
       {"symbol": "BTCUSDT", "category": "USDT-FUTURES", "baseCoin": "BTC", "quoteCoin": "USDT",
        "type": "perpetual", "status": "online", "deliveryTime": "", "symbolType": "crypto", ...}]}

One request per category, no pagination (the whole category comes at once); both must succeed
(all or nothing). `code` other than "00000" is the venue's own error (`ResponseError`).

Followed: `type` perpetual (PERPETUAL) and delivery (DATED, expiry the UTC day of `deliveryTime`),
`status` online, limit_open or limit_close (still trading; `listed` is not open yet, `offline` is
delisted or in maintenance, `restrictedAPI` is closed to the API), quote USDT or USDC. Sizes: the
docs give futures quantities "in terms of the base coin" (`minOrderQty`), there is no contract size
field, so `size_unit` is BASE_UNIT. Multiplier coins carry their multiplier in `baseCoin` (`1000SATS`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
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
    text_field,
)
from collector.instruments.http import get_json
from common.config import Settings
from common.instruments import DATED, PERPETUAL, Instrument, split_multiplier

EXCHANGE = "bitget"
PATH = "/api/v3/market/instruments"
CATEGORIES = ("USDT-FUTURES", "USDC-FUTURES")
OK = "00000"
TRADING = frozenset({"online", "limit_open", "limit_close"})
_TYPES = {"perpetual": PERPETUAL, "delivery": DATED}


def base_url(settings: Settings) -> str:
    return settings.rest_url(EXCHANGE)


@dataclass(frozen=True, slots=True)
class BitgetInstrument:
    """One item of the instruments answer's `data` (a futures category), with Bitget's field names."""

    symbol: str  # the venue symbol, as the topics name it: "BTCUSDT"
    category: str  # "USDT-FUTURES" | "USDC-FUTURES"
    baseCoin: str  # "BTC", "1000SATS" (the multiplier is part of the name)
    quoteCoin: str  # "USDT", "USDC"
    type: str  # perpetual | delivery
    status: str  # listed | online | limit_open | limit_close | offline | restrictedAPI
    deliveryTime: str  # ms as a string, "" for perpetuals: "Available only for deliveries"

    @classmethod
    def parse(cls, raw: object) -> BitgetInstrument:
        """The typed item, or `Invalid` naming what is wrong with it."""
        if not isinstance(raw, dict):
            raise Invalid("bad_item", "not an object")
        delivery = raw.get("deliveryTime")
        return cls(
            symbol=text_field(raw, "symbol"),
            category=text_field(raw, "category"),
            baseCoin=text_field(raw, "baseCoin"),
            quoteCoin=text_field(raw, "quoteCoin"),
            type=text_field(raw, "type"),
            status=text_field(raw, "status"),
            deliveryTime=delivery if isinstance(delivery, str) else "",
        )

    def to_instrument(self) -> Instrument:
        """Normalise: `Excluded` when we do not follow it, `Invalid` when its values make no sense."""
        symbol = check_symbol(self.symbol)
        if self.status not in TRADING:
            raise Excluded("not_trading")
        contract_type = _TYPES.get(self.type)
        if contract_type is None:
            raise Excluded("contract_type")
        if self.quoteCoin not in QUOTES:
            raise Excluded("not_linear_usdt_usdc")
        base, multiplier = split_multiplier(check_coin(self.baseCoin, "baseCoin"))
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
        text = self.deliveryTime
        if not (text.isascii() and text.isdigit() and 0 < len(text) <= 16 and int(text) > 0):
            raise Invalid("bad_expiry", "a delivery contract without a delivery time")
        return day_of_ms(int(text))


def parse_response(data: Any, listing: Listing) -> None:
    """Add one decoded category answer's items to `listing`."""
    if not isinstance(data, dict):
        raise ResponseError("instruments: not a JSON object")
    if data.get("code") != OK:
        raise ResponseError(f"instruments: Bitget code {data.get('code')!r}: {str(data.get('msg'))[:200]}")
    items = data.get("data")
    if not isinstance(items, list):
        raise ResponseError("instruments: no `data` array")
    for raw in items:
        try:
            listing.add(BitgetInstrument.parse(raw).to_instrument())
        except Invalid as exc:
            listing.skip(exc, raw.get("symbol") if isinstance(raw, dict) else raw)
        except Excluded as exc:
            listing.exclude(exc)


async def fetch(base: str, timeout_s: float) -> Listing:
    """Both futures categories, each under `timeout_s`; all or nothing."""
    listing = Listing(EXCHANGE, pages=0)
    for category in CATEGORIES:
        url = f"{base.rstrip('/')}{PATH}?{urlencode({'category': category})}"
        await get_json(url, timeout_s, functools.partial(parse_response, listing=listing))
        listing.pages += 1
    if not listing.instruments:
        raise ResponseError("instruments: no followed contract in the futures lists")
    return listing
