"""OKX v5: the instrument list from `GET /api/v5/public/instruments?instType=SWAP` and `instType=FUTURES`.

A real response (SWAP), cut to the fields we read (the real items also carry `lotSz`, `minSz`,
`tickSz`, `lever`, `maxLmtSz`...; see tests/fakes/okx.py for complete ones):

    {"code": "0", "msg": "",
     "data": [
       {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "uly": "BTC-USDT", "instFamily": "BTC-USDT",
        "settleCcy": "USDT", "ctVal": "0.01", "ctMult": "1", "ctValCcy": "BTC", "ctType": "linear",
        "state": "live", "expTime": "", "listTime": "1606468572000", ...},
       {"instType": "SWAP", "instId": "BTC-USDC-SWAP", "instFamily": "BTC-USDC", "settleCcy": "USDC",
        "ctVal": "0.0001", "ctValCcy": "BTC", "ctType": "linear", "state": "live", ...},
       {"instType": "SWAP", "instId": "BTC-USD-SWAP", "instFamily": "BTC-USD", "settleCcy": "BTC",
        "ctVal": "100", "ctValCcy": "USD", "ctType": "inverse", "state": "live", ...}]}

One request per instrument type (SWAP: perpetuals, FUTURES: dated), no pagination (the docs take
no `limit`/`after` for this endpoint: every instrument of the type comes in one answer); both must
succeed (all or nothing, like every venue). Error answers keep HTTP 200 with `code` not "0".

Followed (OKX docs, Get instruments): `ctType` "`linear`: linear contract" (not `inverse`), `state`
`live` (not `suspend`, `preopen`, `test`), settled in USDT or USDC (`settleCcy`, "Settlement and
margin currency") and quoted in the same (the quote of `instFamily`, "BTC-USDT"). Sizes are
contracts: `size_unit=CONTRACTS`, `contract_size` = `ctVal` ("Contract value") in `ctValCcy`
("Contract value currency"), the base coin; a multiplier spelled in that coin (`1000SATS`) is split
off the canonical base as everywhere (`split_multiplier`). `ctMult` ("Contract multiplier") is 1 for
linear swaps and futures and is not applied (as ccxt and cryptofeed do). A dated contract's expiry
is the UTC day of `expTime` ("For `FUTURES`/`OPTION`, it is natural delivery/exercise time"), else
the instId's `YYMMDD` suffix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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
from common.instruments import CONTRACTS, DATED, PERPETUAL, Instrument, expiry_day, split_multiplier

EXCHANGE = "okx"
PATH = "/api/v5/public/instruments"
INST_TYPES = ("SWAP", "FUTURES")
LIVE = "live"
LINEAR = "linear"
_CONTRACT_TYPES = {"SWAP": PERPETUAL, "FUTURES": DATED}
_MAX_CONTRACT_VALUE = Decimal("1e9")


def base_url(settings: Settings) -> str:
    return settings.rest_url(EXCHANGE)


@dataclass(frozen=True, slots=True)
class OkxInstrument:
    """One item of `data` (instType SWAP or FUTURES), with OKX's field names."""

    instType: str  # SWAP | FUTURES
    instId: str  # the venue symbol, as the channels name it: "BTC-USDT-SWAP", "BTC-USDT-251226"
    instFamily: str  # "BTC-USDT": base and quote of the contract
    settleCcy: str  # settlement and margin currency: "USDT", "USDC" (a coin for inverse)
    ctVal: str  # contract value, in ctValCcy: "0.01" (BTC per contract)
    ctValCcy: str  # contract value currency: the base coin for linear ("BTC"), "USD" for inverse
    ctType: str  # linear | inverse
    state: str  # live | suspend | preopen | test
    expTime: str  # ms as a string: a future's delivery time; "" for a perpetual (or its offline time)

    @classmethod
    def parse(cls, raw: object) -> OkxInstrument:
        """The typed item, or `Invalid` naming what is wrong with it."""
        if not isinstance(raw, dict):
            raise Invalid("bad_item", "not an object")
        exp = raw.get("expTime", "")
        return cls(
            instType=text_field(raw, "instType"),
            instId=text_field(raw, "instId"),
            instFamily=text_field(raw, "instFamily") if raw.get("instFamily") else text_field(raw, "uly"),
            settleCcy=text_field(raw, "settleCcy"),
            ctVal=text_field(raw, "ctVal"),
            ctValCcy=text_field(raw, "ctValCcy"),
            ctType=text_field(raw, "ctType"),
            state=text_field(raw, "state"),
            expTime=exp if isinstance(exp, str) else text_field(raw, "expTime"),
        )

    def to_instrument(self) -> Instrument:
        """Normalise: `Excluded` when we do not follow it, `Invalid` when its values make no sense."""
        symbol = check_symbol(self.instId)
        contract_type = _CONTRACT_TYPES.get(self.instType)
        if contract_type is None:
            raise Excluded("contract_type")
        if self.state != LIVE:
            raise Excluded("not_trading")
        _, _, quote = self.instFamily.partition("-")
        if self.ctType != LINEAR or self.settleCcy not in QUOTES or quote != self.settleCcy:
            raise Excluded("not_linear_usdt_usdc")
        base, multiplier = split_multiplier(check_coin(self.ctValCcy, "ctValCcy"))
        return Instrument(
            exchange=EXCHANGE,
            symbol=symbol,
            base=check_coin(base, "ctValCcy"),
            quote=quote,
            contract_type=contract_type,
            multiplier=multiplier,
            size_unit=CONTRACTS,
            contract_size=self._contract_value(),
            expiry=self._expiry() if contract_type == DATED else "",
            status=self.state.lower(),
        )

    def _contract_value(self) -> Decimal:
        try:
            value = Decimal(self.ctVal)
        except InvalidOperation:
            raise Invalid("bad_field", "ctVal is not a number") from None
        if not value.is_finite() or not Decimal(0) < value <= _MAX_CONTRACT_VALUE or "E" in self.ctVal.upper():
            raise Invalid("bad_field", "ctVal out of range")
        return value

    def _expiry(self) -> str:
        if self.expTime.isascii() and self.expTime.isdigit() and 0 < len(self.expTime) <= 16:
            return day_of_ms(int(self.expTime))
        _, sep, suffix = self.instId.rpartition("-")  # BTC-USDT-251226
        day = expiry_day(suffix) if sep else ""
        if len(day) != 8 or not day.isdigit():
            raise Invalid("bad_expiry", "a dated contract without a delivery time")
        return day


def parse_instruments(data: Any, listing: Listing, inst_type: str = "") -> Listing:
    """Add one decoded answer's items to `listing` (and return it)."""
    what = f"instruments {inst_type}".strip()
    if not isinstance(data, dict):
        raise ResponseError(f"{what}: not a JSON object")
    if data.get("code") != "0":
        raise ResponseError(f"{what}: OKX code {data.get('code')!r}: {str(data.get('msg'))[:200]}")
    items = data.get("data")
    if not isinstance(items, list):
        raise ResponseError(f"{what}: no `data` array")
    for raw in items:
        try:
            listing.add(OkxInstrument.parse(raw).to_instrument())
        except Invalid as exc:
            listing.skip(exc, raw.get("instId") if isinstance(raw, dict) else raw)
        except Excluded as exc:
            listing.exclude(exc)
    return listing


async def fetch(base: str, timeout_s: float) -> Listing:
    """Perpetuals and dated futures (two requests, each under `timeout_s`); all or nothing."""
    listing = Listing(EXCHANGE, pages=0)
    for inst_type in INST_TYPES:
        url = f"{base.rstrip('/')}{PATH}?{urlencode({'instType': inst_type})}"
        await get_json(url, timeout_s, functools.partial(parse_instruments, listing=listing, inst_type=inst_type))
        listing.pages += 1
    if not listing.instruments:
        raise ResponseError("instruments: no followed contract in the SWAP and FUTURES lists")
    return listing
