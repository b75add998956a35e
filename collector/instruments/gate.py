"""Gate USDT perpetual futures: the instrument list from `GET /api/v4/futures/usdt/contracts`, page by page.

A real response (a JSON array), cut to the fields we read (the real items also carry leverage,
fees, funding, risk limits, order size limits...; see tests/fakes/gate.py for complete ones):

    [{"name": "BTC_USDT", "type": "direct", "quanto_multiplier": "0.0001", "status": "trading",
      "in_delisting": false, "order_size_min": "1", "launch_time": 1574035200, ...},
     {"name": "PEPE_USDT", "type": "direct", "quanto_multiplier": "10000000", "status": "trading",
      "in_delisting": false, ...}]

`type` is "inverse" or "direct" (linear); `quanto_multiplier` is "how many units of the underlying
asset the face value of one contract represents" (gate/gateapi-go `docs/Contract.md`): the
`contract_size` that turns the streams' contract counts into base units. `status` is one of
prelaunch, trading, delisting, delisted, circuit_breaker (older answers lack it); `in_delisting`
true means the contract is in its delisting transition or delisted.

Pagination: the list takes `limit` and `offset` ("Maximum number of records returned in a single
list", default 100; "List offset, starting from 0", gateio/gateapi-python `docs/FuturesApi.md`).
Pages are asked for `PAGE_LIMIT` at a time, whatever the venue's own cap: the list ends with an
empty page, or a page with no contract not seen already (a server that ignores `offset`), never on a
short page. More than `MAX_PAGES` pages is a broken pagination (`ResponseError`).

Followed: `type` direct, `status` trading (when present) and not `in_delisting`, the settle/quote
USDT or USDC (read from the name, `BTC_USDT`). Perpetuals only: Gate's dated USDT futures are another
API (`/api/v4/delivery/usdt/contracts`) and are not followed. Multiplier coins carry their multiplier
in the name when Gate writes one there (`1000BONK_USDT`: `split_multiplier`), like every venue.
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
    text_field,
)
from collector.instruments.http import get_json
from common.config import Settings
from common.instruments import CONTRACTS, PERPETUAL, Instrument, split_multiplier

EXCHANGE = "gate"
PATH = "/api/v4/futures/usdt/contracts"
PAGE_LIMIT = 1000
MAX_PAGES = 50
TRADING = "trading"
DIRECT = "direct"
_MAX_MULTIPLIER = Decimal("1e12")


def base_url(settings: Settings) -> str:
    return settings.rest_url(EXCHANGE)


@dataclass(frozen=True, slots=True)
class GateContract:
    """One item of the contracts list, with Gate's field names."""

    name: str  # the venue symbol, as the streams name it: "BTC_USDT"
    type: str  # "direct" (linear) | "inverse"
    quanto_multiplier: str  # base units per contract: "0.0001" for BTC_USDT
    in_delisting: bool  # delisting transition, or delisted
    status: str  # prelaunch | trading | delisting | delisted | circuit_breaker; "" when absent (older API)

    @classmethod
    def parse(cls, raw: object) -> GateContract:
        """The typed item, or `Invalid` naming what is wrong with it."""
        if not isinstance(raw, dict):
            raise Invalid("bad_item", "not an object")
        delisting = raw.get("in_delisting", False)
        if not isinstance(delisting, bool):
            raise Invalid("bad_field", "in_delisting is not a boolean")
        status = raw.get("status", "")
        if not isinstance(status, str):
            raise Invalid("bad_field", "status is not a string")
        return cls(
            name=text_field(raw, "name"),
            type=text_field(raw, "type"),
            quanto_multiplier=text_field(raw, "quanto_multiplier"),
            in_delisting=delisting,
            status=status,
        )

    def to_instrument(self) -> Instrument:
        """Normalise: `Excluded` when we do not follow it, `Invalid` when its values make no sense."""
        symbol = check_symbol(self.name)
        if self.type != DIRECT:
            raise Excluded("not_linear_usdt_usdc")
        if self.in_delisting or (self.status and self.status != TRADING):
            raise Excluded("not_trading")
        coin, sep, quote = symbol.partition("_")
        if not sep or quote not in QUOTES:
            raise Excluded("not_linear_usdt_usdc")
        base, multiplier = split_multiplier(check_coin(coin, "name"))
        return Instrument(
            exchange=EXCHANGE,
            symbol=symbol,
            base=check_coin(base, "name"),
            quote=quote,
            contract_type=PERPETUAL,
            multiplier=multiplier,
            size_unit=CONTRACTS,
            contract_size=self._contract_size(),
            status=TRADING,
        )

    def _contract_size(self) -> Decimal:
        try:
            size = Decimal(self.quanto_multiplier)
        except InvalidOperation:
            raise Invalid("bad_multiplier", "quanto_multiplier is not a number") from None
        if not size.is_finite() or not 0 < size <= _MAX_MULTIPLIER:
            raise Invalid("bad_multiplier", "quanto_multiplier out of range")
        return size


def parse_page(data: Any, listing: Listing, seen: set[str]) -> int:
    """Add one decoded page's items to `listing`; return how many of them were new (0 ends the list)."""
    if isinstance(data, dict) and "label" in data:  # Gate's error shape: {"label": "...", "message": "..."}
        raise ResponseError(f"contracts: Gate error {data.get('label')!r}: {str(data.get('message'))[:200]}")
    if not isinstance(data, list):
        raise ResponseError("contracts: not a JSON array")
    new = 0
    for raw in data:
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in seen:
                continue  # a server that ignores `offset` sends the same page again
            seen.add(name)
        new += 1
        try:
            listing.add(GateContract.parse(raw).to_instrument())
        except Invalid as exc:
            listing.skip(exc, name if name is not None else raw)
        except Excluded as exc:
            listing.exclude(exc)
    return new


async def fetch(base: str, timeout_s: float, *, limit: int = PAGE_LIMIT) -> Listing:
    """Every page of the USDT perpetual list, each under `timeout_s`; all or nothing."""
    listing = Listing(EXCHANGE, pages=0)
    seen: set[str] = set()
    offset = 0
    while True:
        url = f"{base.rstrip('/')}{PATH}?{urlencode({'limit': str(limit), 'offset': str(offset)})}"
        new = await get_json(url, timeout_s, functools.partial(parse_page, listing=listing, seen=seen))
        listing.pages += 1
        if not new:
            break
        if listing.pages >= MAX_PAGES:
            raise ResponseError(f"contracts: pagination does not end (page {listing.pages})")
        offset += new
    if not listing.instruments:
        raise ResponseError("contracts: no followed contract in the USDT list")
    return listing
