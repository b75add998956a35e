"""Sanity rules for exchange input, shared by the adapters' parse and normalise steps.

Every check raises `Rejected(reason)` with a short slug; the adapter's dispatcher catches it per
frame (or per item of a multi-event frame), counts it with `StreamHealth.drop` and goes on.
Reasons: `bad_json` (not JSON / not an object), `unknown_message` (unknown type or topic),
`missing_field`, `bad_field` (wrong JSON type), `bad_value` (not a positive finite number, out of
range), `future_time` (more than 5 minutes ahead of our receive time), `stale_time` (older than
LIQ_MAX_EVENT_AGE_S, checked only on live streams: replays are old on purpose), `not_filled`
(Binance order status that is not a fill).

The helpers are on the hot path: plain functions, no allocations beyond the Decimal they return.
"""

from __future__ import annotations

import json
import json.scanner
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import orjson

FUTURE_TOLERANCE_MS = 300_000
# Nothing here predates crypto perpetual futures; an older time is a broken field, not history.
MIN_TIME_MS = 1_500_000_000_000
MAX_VALUE_USD = Decimal("1e10")
# Bounds on any single amount keep Decimal products far from overflow and underflow.
_MAX_AMOUNT = Decimal("1e15")
_MIN_AMOUNT = Decimal("1e-18")
_ZERO = Decimal(0)
LINEAR_QUOTES = ("USDT", "USDC", "BUSD", "USD")
# COIN-M contract face values in USD (Binance: 100 for BTC, 10 for the others).
_COIN_M_CONTRACT_USD = {"BTC": Decimal(100)}
_COIN_M_DEFAULT_USD = Decimal(10)
# json's own C scanner: json.loads() minus its Python wrapper (BOM and whitespace checks, two
# regex matches), which costs about a microsecond per frame.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed's signature is off


class Rejected(Exception):
    """Input that breaks a rule; `reason` is the slug counted in the stream's health."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_json(raw: str | bytes) -> object:
    """`json.loads(raw)`, or `Rejected("bad_json")`.

    orjson (strict RFC 8259, about 2.5 us faster per frame) decodes the usual frame; whatever it
    refuses (NaN, huge integers, a BOM, ...) goes the standard library's way below, so the result
    or the rejection is always what json.loads gives. A text frame that is exactly one JSON value
    goes through the scanner alone; anything else goes through json.loads itself.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    if type(raw) is str:
        try:
            value, end = _scan_json(raw, 0)
            if end == len(raw):
                return value
        except (StopIteration, ValueError, RecursionError):
            pass
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise Rejected("bad_json") from None


def text_field(obj: dict[str, Any], key: str) -> str:
    """A required string field."""
    value = obj.get(key)
    if type(value) is str:
        return value
    raise Rejected("missing_field" if value is None else "bad_field", key)


def int_field(obj: dict[str, Any], key: str) -> int:
    """A required integer field (bools are not integers here)."""
    value = obj.get(key)
    if type(value) is int:
        return value
    raise Rejected("missing_field" if value is None else "bad_field", key)


def bool_field(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if type(value) is bool:
        return value
    raise Rejected("missing_field" if value is None else "bad_field", key)


def optional_text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise Rejected("bad_field", key)


def object_field(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if type(value) is dict:
        return value
    raise Rejected("missing_field" if value is None else "bad_field", key)


def amount(text: str) -> Decimal:
    """A strictly positive, finite, plausibly sized number from the venue's string."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Rejected("bad_value", text[:40]) from None
    if not value.is_finite() or not _MIN_AMOUNT <= value <= _MAX_AMOUNT:
        raise Rejected("bad_value", text[:40])
    return value


def volume(text: str) -> Decimal:
    """Like `amount` but zero is fine (a minute without trades)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Rejected("bad_value", text[:40]) from None
    if not value.is_finite() or value < _ZERO or value > _MAX_AMOUNT:
        raise Rejected("bad_value", text[:40])
    return value


def amount_or_none(text: str | None) -> Decimal | None:
    """Like `amount`, but None instead of a rejection: for optional fields with a fallback."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and _MIN_AMOUNT <= value <= _MAX_AMOUNT else None


def check_time(time_ms: int, received_ms: int, max_age_ms: int | None) -> int:
    """The event time, if it is neither in the future nor (on live streams) too old."""
    if time_ms < MIN_TIME_MS:
        raise Rejected("bad_value", f"time {time_ms}")
    if time_ms - received_ms > FUTURE_TOLERANCE_MS:
        raise Rejected("future_time", f"time {time_ms}")
    if max_age_ms is not None and received_ms - time_ms > max_age_ms:
        raise Rejected("stale_time", f"time {time_ms}")
    return time_ms


@lru_cache(maxsize=4096)
def split_symbol(symbol: str) -> tuple[str, str]:
    """(base, quote) of a venue symbol: BTCUSDT -> (BTC, USDT); BTCUSD_PERP -> (BTC, USD); unknown -> (symbol, "")."""
    head = symbol.split("_", 1)[0]
    for quote in LINEAR_QUOTES:
        if head.endswith(quote) and len(head) > len(quote):
            return head[: -len(quote)], quote
    return symbol, ""


def base_asset(symbol: str) -> str:
    return split_symbol(symbol)[0]


def usd_value(symbol: str, quantity: Decimal, price: Decimal, *, contracts: bool = False) -> Decimal:
    """USD value of a fill: quantity * price on linear USD(T/C) contracts; face value on COIN-M contracts."""
    base, quote = split_symbol(symbol)
    if contracts:
        value = quantity * _COIN_M_CONTRACT_USD.get(base, _COIN_M_DEFAULT_USD)
    elif quote:
        value = quantity * price
    else:
        raise Rejected("bad_value", f"no USD quote in {symbol}")
    if value > MAX_VALUE_USD or value <= _ZERO:
        raise Rejected("bad_value", f"value {value}")
    return value
