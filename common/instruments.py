"""The one instrument model every venue maps into, and the canonical names that join venues.

A venue symbol (`BTCUSDT` on Binance, `BTCPERP` on Bybit, `BTC-USDT-SWAP` on OKX, `BTC_USDT` on
Gate) is mapped to one `Instrument`: canonical base asset and quote, contract type, the
multiplier of multiplier coins (the `1000` of `1000PEPEUSDT`: one unit of the venue's quantity is
1000 PEPE and its price is per 1000 PEPE), and the unit the venue counts sizes in (base asset, or
contracts of `contract_size` base units each). Cross-venue cascades and totals join on
`Instrument.canonical` (`BTC-USDT-PERP`) or on the coin (`BTC`), never on the raw venue string, and
quantities of different multipliers are converted to the canonical base before they are summed.

The venues' instrument lists (REST) are the final word. `guess_instrument()` is the fallback for a
symbol no list has named yet (start-up without REST, replayed sessions): it reads the common
spellings and says so with `listed=False`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

PERPETUAL = "perpetual"
DATED = "dated"
BASE_UNIT = "base"  # sizes are in the venue's base asset (times the multiplier, if any)
CONTRACTS = "contracts"  # sizes are contracts of `contract_size` base units each
_ONE = Decimal(1)
_QUOTES = ("USDT", "USDC")
# 1000PEPE, 10000SATS, 1000000MOG, 1MBABYDOGE: a power-of-ten (or "1M") prefix on the coin name.
_MULTIPLIER_PREFIX = re.compile(r"^(1(?:0+)|1M)(?=[A-Z])")
# Bybit writes SHIB's the other way round: SHIB1000 (1 followed by three zeros or more, behind).
_MULTIPLIER_SUFFIX = re.compile(r"^([A-Z][A-Z0-9]*?[A-Z])(1000+)$")
_DATED_SUFFIX = re.compile(r"-(\d{2}[A-Z]{3}\d{2})$")
_MONTHS = {
    m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}


def expiry_day(text: str) -> str:
    """A venue's delivery date as YYYYMMDD: `26DEC25` (Binance, Bybit) and `251226` (OKX) give `20251226`."""
    if len(text) == 7 and text[2:5] in _MONTHS and text[:2].isdigit() and text[5:].isdigit():
        return f"20{text[5:]}{_MONTHS[text[2:5]]:02d}{text[:2]}"
    if len(text) == 6 and text.isdigit():
        return f"20{text}"
    return text


@dataclass(frozen=True, slots=True)
class Instrument:
    exchange: str  # lower case registry name: "binance"
    symbol: str  # the venue's own symbol, exactly as its streams name it
    base: str  # canonical base asset: "BTC", "PEPE" (never "1000PEPE")
    quote: str  # "USDT" | "USDC"
    contract_type: str  # PERPETUAL | DATED
    multiplier: Decimal = _ONE  # canonical base units per unit of the venue's base naming
    size_unit: str = BASE_UNIT  # BASE_UNIT | CONTRACTS
    contract_size: Decimal = _ONE  # venue base units per contract, when size_unit == CONTRACTS
    expiry: str = ""  # dated contracts: the delivery day as YYYYMMDD ("20251226"), whatever the venue wrote
    status: str = "trading"  # the venue's status, lower case
    listed: bool = True  # False: guessed from the symbol, no instrument list named it

    @property
    def canonical(self) -> str:
        """`BTC-USDT-PERP`, `BTC-USDT-26DEC25`: equal across venues for the same contract."""
        kind = "PERP" if self.contract_type == PERPETUAL else (self.expiry or "FUT")
        return f"{self.base}-{self.quote}-{kind}"

    def base_quantity(self, size: Decimal) -> Decimal:
        """The venue's size in canonical base units (contracts and multipliers applied)."""
        if self.size_unit == CONTRACTS:
            size = size * self.contract_size
        return size * self.multiplier if self.multiplier != _ONE else size

    def canonical_quantity(self, quantity: Decimal) -> Decimal:
        """An event's quantity (venue base units: contracts already converted by the adapter) in
        canonical base units: only the multiplier of `1000PEPE`-style names is left to apply."""
        return quantity * self.multiplier if self.multiplier != _ONE else quantity

    def base_price(self, price: Decimal) -> Decimal:
        """The venue's price per canonical base unit (a 1000PEPE price divided by 1000)."""
        return price / self.multiplier if self.multiplier != _ONE else price


def split_multiplier(coin: str) -> tuple[str, Decimal]:
    """`1000PEPE` -> (`PEPE`, 1000); `1MBABYDOGE` -> (`BABYDOGE`, 1000000); `SHIB1000` -> (`SHIB`,
    1000); `BTC` -> (`BTC`, 1)."""
    m = _MULTIPLIER_PREFIX.match(coin)
    if m is None or len(coin) == len(m.group(1)):
        suffix = _MULTIPLIER_SUFFIX.match(coin)
        if suffix is not None:
            return suffix.group(1), Decimal(suffix.group(2))
        return coin, _ONE
    prefix = m.group(1)
    return coin[len(prefix) :], Decimal(1_000_000) if prefix == "1M" else Decimal(prefix)


@lru_cache(maxsize=16384)
def guess_instrument(exchange: str, symbol: str) -> Instrument:
    """The instrument a symbol most likely names, when no venue list has named it (`listed=False`).

    Reads `BTCUSDT`, `1000PEPEUSDT`, `BTCUSDT-26DEC25` (Binance, Bybit), Bybit's USDC perpetuals
    `BTCPERP` and USDC futures `BTC-26DEC25`, OKX's `BTC-USDT-SWAP` / `BTC-USDT-251226`, and Gate's
    `BTC_USDT`. Anything else becomes its own base with an empty quote (never joined to others).
    """
    expiry = ""
    head = symbol
    m = _DATED_SUFFIX.search(symbol)
    if m:
        expiry, head = m.group(1), symbol[: m.start()]
    parts = re.split(r"[-_]", head)
    base, quote = head, ""
    if len(parts) >= 2 and parts[1] in _QUOTES:  # BTC-USDT-SWAP, BTC_USDT, BTC-USDT-251226
        base, quote = parts[0], parts[1]
        if len(parts) == 3 and parts[2].isdigit():
            expiry = parts[2]
    elif head.endswith("PERP") and len(head) > 4:  # Bybit USDC perpetual: BTCPERP
        base, quote = head[:-4], "USDC"
    else:
        for q in _QUOTES:
            if head.endswith(q) and len(head) > len(q):
                base, quote = head[: -len(q)], q
                break
        else:
            if expiry:  # Bybit USDC futures: BTC-26DEC25
                quote = "USDC"
    coin, multiplier = split_multiplier(base)
    return Instrument(
        exchange=exchange,
        symbol=symbol,
        base=coin,
        quote=quote,
        contract_type=DATED if expiry else PERPETUAL,
        multiplier=multiplier,
        expiry=expiry_day(expiry),
        listed=False,
    )


def cascade_names(symbol: str, exchanges: tuple[str, ...] | list[str]) -> list[str]:
    """The `cascades.symbol` values a venue symbol's filter matches: its canonical instrument on
    every given venue (cascades join venues under that name) and the venue symbol itself (rows
    written before cascades were canonical)."""
    return sorted({symbol, *(guess_instrument(ex, symbol).canonical for ex in exchanges)})


def venue_symbols(canonical: str, known: dict[str, list[str]]) -> dict[str, tuple[str, Decimal]]:
    """exchange -> (venue symbol, multiplier) of a canonical instrument among `known` venue symbols
    (exchange -> symbols): how a cascade's canonical name finds its venues' candles."""
    out: dict[str, tuple[str, Decimal]] = {}
    for exchange, symbols in known.items():
        for symbol in symbols:
            inst = guess_instrument(exchange, symbol)
            if symbol == canonical or inst.canonical == canonical:
                out.setdefault(exchange, (symbol, inst.multiplier))
    return out
