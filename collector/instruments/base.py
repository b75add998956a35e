"""What every venue module shares: the errors, the result of one instrument list, small checks.

Errors (all `InstrumentsError`; the catalog catches them per venue, keeps that venue's last list
and retries later with capped backoff, so none of them is fatal):
- `FetchError`: the request did not get a complete answer (connection refused or reset, DNS, TLS,
  an HTTP error status, no complete answer within the deadline, an oversized body).
- `ResponseError`: an answer came but is not a usable list (not JSON, not the documented shape,
  the venue's own error code, an empty list, a broken pagination). A partial list is never
  returned: one bad page fails the whole venue's refresh, so that nothing looks delisted by mistake.

One malformed *item* is not an error: `Listing` skips it and counts it by reason (`invalid`),
with a few escaped examples for the log line. Items that are well formed but not followed
(inverse, other quotes, not trading) are counted in `excluded`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from collector.health import one_line
from common.instruments import Instrument
from common.symbols import valid_symbol

QUOTES = ("USDT", "USDC")  # linear contracts we follow: quoted and settled in these
_EXAMPLES = 5  # invalid items quoted in the log line, at most


class InstrumentsError(RuntimeError):
    """A venue's instrument list cannot be had now (see the module docstring)."""


class FetchError(InstrumentsError):
    """No complete answer from the venue's REST API."""


class ResponseError(InstrumentsError):
    """An answer that is not a usable instrument list."""


class Invalid(Exception):
    """One item of a list is malformed; `reason` is a short code such as `bad_symbol`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Excluded(Exception):
    """One item is well formed but not a contract we follow (`reason`: `not_trading`, `quote`...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Listing:
    """One venue's instrument list as fetched: the instruments by venue symbol, and what was skipped."""

    exchange: str
    instruments: dict[str, Instrument] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)  # malformed items by reason
    excluded: dict[str, int] = field(default_factory=dict)  # items not followed, by reason
    examples: list[str] = field(default_factory=list)  # a few malformed items, escaped, for the log
    pages: int = 1

    def add(self, instrument: Instrument) -> None:
        if instrument.symbol in self.instruments:
            self.skip(Invalid("duplicate", instrument.symbol), instrument.symbol)
            return
        self.instruments[instrument.symbol] = instrument

    def skip(self, exc: Invalid, raw: object) -> None:
        self.invalid[exc.reason] = self.invalid.get(exc.reason, 0) + 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(one_line(f"{exc}: {raw!r}", 200))

    def exclude(self, exc: Excluded) -> None:
        self.excluded[exc.reason] = self.excluded.get(exc.reason, 0) + 1

    @property
    def skipped(self) -> int:
        return sum(self.invalid.values())

    def summary(self) -> str:
        """`612 instruments (2 skipped: bad_symbol 1, duplicate 1; 40 not followed)` for the log."""
        text = f"{len(self.instruments)} instruments"
        details = []
        if self.invalid:
            counts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.invalid.items()))
            details.append(f"{self.skipped} skipped: {counts}, e.g. {'; '.join(self.examples[:2])}")
        if self.excluded:
            details.append(f"{sum(self.excluded.values())} not followed")
        return text + (f" ({'; '.join(details)})" if details else "")


def text_field(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise Invalid("bad_field", f"{name} is {type(value).__name__}, not a string")
    return value


def ms_field(raw: dict[str, Any], name: str, *, as_text: bool = False) -> int:
    """A millisecond timestamp; Bybit writes it as a string of digits (`"1766736000000"`), Binance as a number."""
    value = raw.get(name)
    if as_text and isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    if not as_text and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**16:
        return value
    raise Invalid("bad_field", f"{name} is not a time in ms")


def valid_coin(text: str) -> bool:
    """A coin name: the symbol rule, allowing the one-letter coins some venues list (`W`, `T`)."""
    return valid_symbol(text if len(text) > 1 else text * 2)


def check_symbol(symbol: str) -> str:
    if not valid_symbol(symbol):
        raise Invalid("bad_symbol", "not a venue symbol")
    return symbol


def check_coin(coin: str, what: str) -> str:
    if not valid_coin(coin):
        raise Invalid("bad_coin", f"{what} is not a coin name")
    return coin


def day_of_ms(ms: int) -> str:
    """A delivery time in ms as its UTC day, YYYYMMDD (the `expiry` of common.instruments)."""
    return time.strftime("%Y%m%d", time.gmtime(ms / 1000))
