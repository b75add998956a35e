"""Binance USD-M futures: the instrument list from `GET /fapi/v1/exchangeInfo` (one request, every symbol).

A real response, cut to the fields we read (the real one also has `rateLimits`, `assets`, and
per symbol `filters`, `orderTypes`, precisions...; see tests/fakes/rest.py for a complete item):

    {"timezone": "UTC", "serverTime": 1732400000000, "futuresType": "U_MARGINED",
     "rateLimits": [...], "exchangeFilters": [], "assets": [...],
     "symbols": [
       {"symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT", "underlyingType": "COIN", ...},
       {"symbol": "1000PEPEUSDT", "pair": "1000PEPEUSDT", "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "status": "TRADING", "baseAsset": "1000PEPE", "quoteAsset": "USDT",
        "marginAsset": "USDT", ...},
       {"symbol": "BTCUSDT_251226", "pair": "BTCUSDT", "contractType": "CURRENT_QUARTER",
        "deliveryDate": 1766736000000, "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
        "marginAsset": "USDT", ...},
       {"symbol": "币安人生USDT", "pair": "币安人生USDT", "contractType": "PERPETUAL", "status": "TRADING",
        "baseAsset": "币安人生", "quoteAsset": "USDT", "marginAsset": "USDT", ...}]}

Followed: `status` TRADING (not PENDING_TRADING, SETTLING, CLOSE...), quote and margin asset USDT
or USDC. `contractType` PERPETUAL and the other `*_PERPETUAL` kinds (TRADIFI_PERPETUAL: stocks and
commodities, linear USDT perpetuals all the same) are perpetual; CURRENT_QUARTER, NEXT_QUARTER,
CURRENT_MONTH, NEXT_MONTH are dated, their expiry the UTC day of `deliveryDate`. A perpetual's
`deliveryDate` (4133404800000, the year 2100) means nothing. Multiplier coins are named by their
base asset (`1000PEPE`: 1000 PEPE per unit of quantity); sizes are in that base (USD-M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

EXCHANGE = "binance"
PATH = "/fapi/v1/exchangeInfo"
TRADING = "TRADING"
_DATED = frozenset({"CURRENT_QUARTER", "NEXT_QUARTER", "CURRENT_MONTH", "NEXT_MONTH"})


def base_url(settings: Settings) -> str:
    return settings.rest_url(EXCHANGE)


@dataclass(frozen=True, slots=True)
class BinanceSymbol:
    """One item of exchangeInfo's `symbols`, with Binance's field names."""

    symbol: str  # the venue symbol, as the streams name it (lower-cased there): "BTCUSDT", "BTCUSDT_251226"
    pair: str  # the underlying pair: "BTCUSDT" for the perpetual and every dated BTC contract
    contractType: str  # PERPETUAL, TRADIFI_PERPETUAL, CURRENT_QUARTER, NEXT_QUARTER, ...
    status: str  # TRADING, PENDING_TRADING, SETTLING, CLOSE, ...
    baseAsset: str  # "BTC", "1000PEPE" (the multiplier is part of the name)
    quoteAsset: str  # "USDT", "USDC"
    marginAsset: str  # the settlement asset: equal to the quote for linear contracts
    deliveryDate: int  # ms; 4133404800000 (2100-12-25) for perpetuals

    @classmethod
    def parse(cls, raw: object) -> BinanceSymbol:
        """The typed item, or `Invalid` naming what is wrong with it."""
        if not isinstance(raw, dict):
            raise Invalid("bad_item", "not an object")
        return cls(
            symbol=text_field(raw, "symbol"),
            pair=text_field(raw, "pair"),
            contractType=text_field(raw, "contractType"),
            status=text_field(raw, "status"),
            baseAsset=text_field(raw, "baseAsset"),
            quoteAsset=text_field(raw, "quoteAsset"),
            marginAsset=text_field(raw, "marginAsset"),
            deliveryDate=ms_field(raw, "deliveryDate"),
        )

    def to_instrument(self) -> Instrument:
        """Normalise: `Excluded` when we do not follow it, `Invalid` when its values make no sense."""
        symbol = check_symbol(self.symbol)
        if self.status != TRADING:
            raise Excluded("not_trading")
        if self.quoteAsset not in QUOTES or self.marginAsset not in QUOTES:
            raise Excluded("not_linear_usdt_usdc")
        if self.contractType == "PERPETUAL" or self.contractType.endswith("_PERPETUAL"):
            contract_type, expiry = PERPETUAL, ""
        elif self.contractType in _DATED:
            contract_type, expiry = DATED, self._expiry()
        else:
            raise Excluded("contract_type")
        base, multiplier = split_multiplier(check_coin(self.baseAsset, "baseAsset"))
        return Instrument(
            exchange=EXCHANGE,
            symbol=symbol,
            base=check_coin(base, "baseAsset"),
            quote=self.quoteAsset,
            contract_type=contract_type,
            multiplier=multiplier,
            expiry=expiry,
            status=self.status.lower(),
        )

    def _expiry(self) -> str:
        if self.deliveryDate > 0:
            return day_of_ms(self.deliveryDate)
        _, sep, suffix = self.symbol.rpartition("_")  # BTCUSDT_251226
        day = expiry_day(suffix) if sep else ""
        if len(day) != 8 or not day.isdigit():
            raise Invalid("bad_expiry", "a dated contract without a delivery date")
        return day


def parse_exchange_info(data: Any) -> Listing:
    """Parse, then normalise, every item of a decoded exchangeInfo response."""
    if not isinstance(data, dict):
        raise ResponseError("exchangeInfo: not a JSON object")
    if "code" in data and "msg" in data:  # Binance's error shape: {"code": -1121, "msg": "..."}
        raise ResponseError(f"exchangeInfo: Binance error {data.get('code')!r}: {str(data.get('msg'))[:200]}")
    items = data.get("symbols")
    if not isinstance(items, list):
        raise ResponseError("exchangeInfo: no `symbols` array")
    listing = Listing(EXCHANGE)
    for raw in items:
        try:
            listing.add(BinanceSymbol.parse(raw).to_instrument())
        except Invalid as exc:
            listing.skip(exc, raw.get("symbol") if isinstance(raw, dict) else raw)
        except Excluded as exc:
            listing.exclude(exc)
    if not listing.instruments:
        raise ResponseError(f"exchangeInfo: no followed contract among {len(items)} symbols")
    return listing


async def fetch(base: str, timeout_s: float) -> Listing:
    """The whole USD-M list (one request, weight 1)."""
    return await get_json(base.rstrip("/") + PATH, timeout_s, parse_exchange_info)
