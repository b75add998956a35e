"""Sanity rules for exchange input, shared by the adapters' parse and normalise steps.

Every check raises `Rejected(reason)` with a short slug; the adapter's dispatcher catches it per
frame (or per item of a multi-event frame), counts it with `StreamHealth.drop` and goes on: one
bad item never costs the good items of its frame. Reasons: `bad_json` (not JSON / not an object),
`unknown_message` (unknown type or topic), `missing_field`, `bad_field` (wrong JSON type),
`bad_text` (a text field holding a control character, a lone surrogate or another unprintable
character), `bad_symbol` (not a venue symbol by `common.symbols.valid_symbol`), `bad_number` (not a
plain decimal, see below), `bad_value` (a plain number out of range, an unknown side),
`future_time` (more than 5 minutes ahead of our receive time), `stale_time` (older than
LIQ_MAX_EVENT_AGE_S, checked only on live streams: replays are old on purpose), `not_filled`
(Binance order status that is not a fill).

Numbers. Both venues write every amount as a JSON string holding a plain decimal ("0.2139000",
"97210.10", "100"), so that is the only form accepted (`_PLAIN_NUMBER`): ASCII digits without a
sign, exponent, spaces, underscores or leading zeros, at most one dot with digits on both sides,
at most 28 characters. Everything else Python's `Decimal()` would take is `bad_number`: " 1",
"1_000", "+1", "-1", "1e5", "5E-1", ".5", "5.", "Infinity", "NaN", Arabic-Indic or full-width
digits. Exponents are refused rather than converted: no venue sends them, and a re-send written
"5E-1" is better dropped (and counted) than trusted. An accepted number loses its trailing
fractional zeros before it becomes a `Decimal`, so "0.5", "0.50" and "0.500" give the same
`Decimal` with the same `str()` ("0.5"; "5916.0" gives "5916", "100" stays "100", never "1E+2";
only values below 1e-6 print in E notation, which is how `str(Decimal)` writes them). The
canonical text `amount_text()` returns is exactly `common.events.canonical_text` of the value:
the adapters build the dedup key from it. The 28-character bound keeps every amount, and so the
key, exact in Decimal's default context. `value_usd` is the exact product of two canonical
amounts: a re-send gives the same product, the same `str()`.

Text. Symbols follow `common.symbols.valid_symbol` (`bad_symbol`): letters of any script, so
`币安人生USDT` is a symbol like any other, but no control characters, surrogates, spaces, markup
or hundreds of characters. Every other text field of an item, read or not, must be printable
(`bad_text`). A frame without a backslash whose raw text is ASCII without DEL, or printable as a
whole, cannot decode to an unprintable string (JSON forbids raw control characters in strings, and
without escapes every string is a piece of the raw text), so `clean_frame()` clears the usual frame
in one pass, non-ASCII symbols included; the others (JSON escapes, a line break) have each item's
text fields checked by `check_texts()`.

The helpers are on the hot path (bench/bench_parse.py): plain functions, Decimal's C parser doing
most of the checking, caches where the stream repeats itself (symbols, candle prices, liquidation
prices: `price_text`). The adapters decode their usual frames with typed msgspec decoders first
(`WireInt` keeps their integers to what `parse_json` reads as integers) and give everything those
refuse to the functions here, which name the reason.
"""

from __future__ import annotations

import json
import json.scanner
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any

import msgspec
import orjson

from common import events
from common.instruments import CONTRACTS, Instrument
from common.symbols import valid_symbol

FUTURE_TOLERANCE_MS = 300_000
# Nothing here predates crypto perpetual futures; an older time is a broken field, not history.
MIN_TIME_MS = 1_500_000_000_000
MAX_VALUE_USD = Decimal("1e10")
# Bounds on any single amount keep Decimal products far from overflow and underflow.
_MAX_AMOUNT = Decimal("1e15")
_MIN_AMOUNT = Decimal("1e-18")
_ZERO = Decimal(0)
# A plain decimal as the venues write it: the rule `number()` applies.
_PLAIN_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?").fullmatch
# Decimal's default context keeps 28 digits: no longer number is exact in every sum and key.
_MAX_NUMBER_CHARS = 28
# A whole number shorter than this is below _MAX_AMOUNT (1e15): `amount_text`'s first line.
_MAX_INTEGER_DIGITS = 16
# Times in ms written as text (OKX, Bitget): more digits than this is no time of ours.
_MAX_MS_DIGITS = 16
# Candle prices seen lately (about 4 MB at most): the whole market's klines repeat them.
_CANDLE_PRICES: dict[str, Decimal] = {}
_CANDLE_PRICES_MAX = 16384
# Liquidation prices seen lately, with their canonical text (`price_text`).
_PRICES: dict[str, tuple[str, Decimal]] = {}
_PRICES_MAX = 16384
LINEAR_QUOTES = ("USDT", "USDC", "BUSD", "USD")
# COIN-M contract face values in USD (Binance: 100 for BTC, 10 for the others).
_COIN_M_CONTRACT_USD = {"BTC": Decimal(100)}
_COIN_M_DEFAULT_USD = Decimal(10)
# json's own C scanner: json.loads() minus its Python wrapper (BOM and whitespace checks, two
# regex matches), which costs about a microsecond per frame.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed's signature is off


# An integer field for typed decoders (msgspec) that must agree with `parse_json`: orjson reads
# integers outside [-2**63, 2**64) as floats, which the field checks refuse (`bad_field`), so a
# typed decoder refuses every integer beyond int64 and leaves that frame to the general path.
WireInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Rejected(Exception):
    """Input that breaks a rule; `reason` is the slug counted in the stream's health."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_object(raw: str | bytes) -> dict[str, Any]:
    """A frame that must be one JSON object (every venue but Binance's combined streams)."""
    msg = parse_json(raw)
    if type(msg) is not dict:
        raise Rejected("bad_json", "not an object")
    return msg


def list_field(msg: dict[str, Any], name: str) -> list[Any]:
    """The list of items a frame carries (`data`, Gate's `result`), or the reason it has none."""
    items = msg.get(name)
    if type(items) is not list:
        raise Rejected("missing_field" if items is None else "bad_field", name)
    return items


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


def clean_frame(raw: str | bytes) -> bool:
    """True when every string decoded from `raw` is printable (`check_texts` would find nothing).

    Without an escape (a backslash) a decoded string is a piece of the raw text as it stands. Raw
    control characters are invalid JSON inside strings, so an ASCII text without a backslash or DEL
    is clean (about 50 ns for a usual frame); a text with other characters (`币安人生USDT`) is clean
    when it is printable as a whole (`str.isprintable()`, a few hundred ns: no control, format or
    separator character, no surrogate, no line break even between tokens). Bytes are clean only as
    ASCII. False is no verdict: it only means the items' text fields must be checked one by one.
    """
    if type(raw) is str:
        if raw.isascii():
            return "\\" not in raw and "\x7f" not in raw
        return "\\" not in raw and raw.isprintable()
    return raw.isascii() and b"\\" not in raw and b"\x7f" not in raw


def check_texts(obj: dict[str, Any], skip: str = "") -> None:
    """`bad_text` unless every string value of `obj` (one level, the key `skip` aside) is printable.

    Printable is `str.isprintable()`: letters and digits of any script, punctuation, symbols and the
    ASCII space; not control or format characters, surrogates, line separators or other spaces.
    The symbol is skipped by the callers: `check_symbol()` refuses it with its own reason.
    """
    for key, value in obj.items():
        if type(value) is str and key != skip and not value.isprintable():
            raise Rejected("bad_text", repr(key)[:40])


@lru_cache(maxsize=8192)
def check_symbol(text: str) -> str:
    """A venue symbol (`common.symbols.valid_symbol`), or `Rejected("bad_symbol")`.

    Cached (the whole market is about 1,000 names); a refusal raises, so no long or bad text is
    ever kept in the cache.
    """
    if valid_symbol(text):
        return text
    raise Rejected("bad_symbol", repr(text[:40]))


def _number(text: str) -> tuple[str, Decimal]:
    """(canonical text, Decimal) of a decimal as `str(Decimal)` writes it, or `Rejected("bad_number")`.

    Trailing fractional zeros are cut first ("0.2139000" -> "0.2139", "5916.0" -> "5916"). Then
    Decimal's own C parser does most of the work: a text that `str()` of its Decimal writes back
    unchanged and without an exponent has no spaces, underscores, "+", leading zeros or other
    scripts' digits. A sign, NaN and Infinity pass this step: the callers' bounds refuse them and
    `_refused` names them `bad_number`. What fails the round trip goes to `_PLAIN_NUMBER`, the
    rule itself, on the text as sent: values below 1e-6, which `str()` writes as "1E-7", pass it;
    nothing else does.
    """
    if len(text) > _MAX_NUMBER_CHARS:  # first: Decimal would read megabytes of digits
        raise Rejected("bad_number", f"{len(text)} characters")
    canonical = text
    if text[-1:] == "0" and "." in text:
        canonical = text.rstrip("0")
        if canonical[-1] == ".":
            canonical = canonical[:-1]  # one dot only: "5..0" stays "5." and is refused below
    try:
        value = Decimal(canonical)
    except InvalidOperation:
        raise Rejected("bad_number", repr(text)) from None
    if (str(value) != canonical or "E" in canonical) and _PLAIN_NUMBER(text) is None:
        raise Rejected("bad_number", repr(text))
    return canonical, value


def _refused(text: str) -> Rejected:
    """Why a number `_number()` read is refused: not plain (a sign, NaN, Infinity), or out of range."""
    plain = len(text) <= _MAX_NUMBER_CHARS and _PLAIN_NUMBER(text) is not None
    return Rejected("bad_value" if plain else "bad_number", repr(text[:40]))


def python_amount_text(text: str) -> tuple[str, Decimal]:
    """(canonical text, Decimal) of a strictly positive, plausibly sized amount: the key needs both.

    `_number()` and the bounds written out in one function: this runs twice per liquidation. A whole
    number of at most 15 ASCII digits without a leading zero (contract counts, most sizes) is its
    own canonical text and lies within the bounds: it takes the first line alone.
    """
    if text.isdigit() and text.isascii() and text[0] != "0" and len(text) < _MAX_INTEGER_DIGITS:
        return text, Decimal(text)
    if len(text) > _MAX_NUMBER_CHARS:
        raise Rejected("bad_number", f"{len(text)} characters")
    canonical = text
    if text[-1:] == "0" and "." in text:
        canonical = text.rstrip("0")
        if canonical[-1] == ".":
            canonical = canonical[:-1]
    try:
        value = Decimal(canonical)
        if (str(value) == canonical and "E" not in canonical or _PLAIN_NUMBER(text) is not None) and (
            _MIN_AMOUNT <= value <= _MAX_AMOUNT
        ):
            return canonical, value
    except InvalidOperation:  # not a number, or NaN in the bounds
        pass
    raise _refused(text)


def python_price_text(text: str) -> tuple[str, Decimal]:
    """`amount_text(text)` for a liquidation price, remembered: prices sit on each symbol's tick grid
    and come back from one liquidation to the next (a cascade walks through the same levels),
    where sizes rarely repeat. The memo holds accepted texts only (a refusal raises) and starts
    over when full (about 4 MB at most)."""
    known = _PRICES.get(text)
    if known is None:
        known = amount_text(text)
        if len(_PRICES) >= _PRICES_MAX:
            _PRICES.clear()
        _PRICES[text] = known
    return known


def optional_price_text(text: str | None) -> tuple[str, Decimal] | None:
    """`optional_amount_text` of an optional price, remembered like `price_text`."""
    if not text:
        return None
    known = _PRICES.get(text)
    if known is None:
        known = optional_amount_text(text)
        if known is None:
            return None
        if len(_PRICES) >= _PRICES_MAX:
            _PRICES.clear()
        _PRICES[text] = known
    return known


def amount(text: str) -> Decimal:
    """A strictly positive, plausibly sized amount from the venue's plain decimal string."""
    value = _number(text)[1]
    try:
        if _MIN_AMOUNT <= value <= _MAX_AMOUNT:
            return value
    except InvalidOperation:  # NaN
        pass
    raise _refused(text)


def candle_price(text: str) -> Decimal:
    """`amount(text)` for a candle's open, high, low and close, remembered: a kline stream repeats
    them from one update to the next (the open all minute long, high and low most of it). The
    memo holds checked texts only and starts over when full."""
    value = _CANDLE_PRICES.get(text)
    if value is None:
        value = amount(text)
        if len(_CANDLE_PRICES) >= _CANDLE_PRICES_MAX:
            _CANDLE_PRICES.clear()
        _CANDLE_PRICES[text] = value
    return value


def optional_amount_text(text: str | None) -> tuple[str, Decimal] | None:
    """`amount_text` of an optional field; None when it is absent, empty or zero (Binance's "0")."""
    if not text:
        return None
    try:
        return amount_text(text)
    except Rejected as refused:  # rare: orders without fills
        if refused.reason == "bad_value" and _number(text)[0] == "0":
            return None
        raise


def volume(text: str) -> Decimal:
    """Like `amount` but zero is fine (a minute without trades)."""
    canonical, value = _number(text)
    try:
        if _ZERO <= value <= _MAX_AMOUNT and canonical[0] != "-":  # "-0" is not below zero
            return value
    except InvalidOperation:  # NaN
        pass
    raise _refused(text)


def python_check_time(time_ms: int, received_ms: int, max_age_ms: int | None) -> int:
    """The event time, if it is neither in the future nor (on live streams) too old."""
    if time_ms < MIN_TIME_MS:
        raise Rejected("bad_value", f"time {time_ms}")
    if time_ms - received_ms > FUTURE_TOLERANCE_MS:
        raise Rejected("future_time", f"time {time_ms}")
    if max_age_ms is not None and received_ms - time_ms > max_age_ms:
        raise Rejected("stale_time", f"time {time_ms}")
    return time_ms


def python_check_ms_text(text: str, name: str, received_ms: int, max_age_ms: int | None) -> int:
    """`check_time` of a time in ms the venue writes as a string of ASCII digits ("1732400000321",
    as OKX and Bitget write every time), or `bad_field` naming the field."""
    if text.isdigit() and text.isascii() and len(text) <= _MAX_MS_DIGITS:
        return check_time(int(text), received_ms, max_age_ms)
    raise Rejected("bad_field", f"{name} is not a time in ms")


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


USD_QUOTES = frozenset(("USDT", "USDC"))  # linear contracts valued in USD (USDC at par)


def listed_contract(instrument_of: Callable[[str, str], Instrument], exchange: str, symbol: str) -> Instrument:
    """The listed USD contract instrument of a checked `symbol` on a venue that counts contracts (OKX,
    Gate), or `unknown_instrument` (a guessed instrument cannot convert contracts) or `bad_value`."""
    instrument = instrument_of(exchange, symbol)
    if not instrument.listed or instrument.size_unit != CONTRACTS:
        raise Rejected("unknown_instrument", symbol)
    if instrument.quote not in USD_QUOTES:
        raise Rejected("bad_value", f"no USD quote in {symbol}")
    return instrument


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


# The four checks every liquidation passes in C when collector/_validation_native.c is built
# (scripts/build_native.py, run by `make venv` and the image). A twin settles only what it can
# accept on its own and hands everything else to the Python function above, the rule, which
# accepts it or names the reason (tests/exchanges/test_native_twins.py). Without the build
# the Python functions serve, slower; the collector says which at start (`NATIVE`).
try:
    from collector import _validation_native as _native
except ImportError:
    NATIVE = False
    amount_text = python_amount_text
    price_text = python_price_text
    check_time = python_check_time
    check_ms_text = python_check_ms_text
else:
    _native.bind(
        Decimal, _PRICES, _PRICES_MAX, python_amount_text, python_price_text, python_check_time, python_check_ms_text
    )
    NATIVE = True
    amount_text = _native.amount_text
    price_text = _native.price_text
    check_time = _native.check_time
    check_ms_text = _native.check_ms_text

# Both halves of the hot path in C (these checks, common.events' key and constructor): what the
# collector's start-up line, its metric and the parse benchmarks report.
HOT_PATH_COMPILED = NATIVE and events.NATIVE
