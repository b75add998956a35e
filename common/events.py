"""The normalised event types every exchange adapter produces and every writer consumes.

Times are integer milliseconds since the epoch, UTC (cheap on the hot path); the properties give
`datetime` and the users' display formats (dates `YYYYMMDD`, times `HH:MM:SS` UTC). Amounts are
`Decimal` so that totals in Redis, TimescaleDB and the app agree to the last digit. The adapters
give canonical amounts (no trailing fractional zeros: "0.50" arrives as Decimal("0.5")), so the
same liquidation re-sent with its quantity written differently is the same event; anything that
turns an amount into text for a key or a member uses `canonical_text`, whatever built the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from hashlib import blake2b
from struct import Struct

_BLAKE2B_64 = blake2b(digest_size=8)  # fresh state, copied per key
_FRESH_BLAKE2B_64 = _BLAKE2B_64.copy
_INT64 = Struct(">q").unpack
_new_object = object.__new__


class Side(StrEnum):
    """The side of the position that was liquidated."""

    LONG = "LONG"
    SHORT = "SHORT"


# The members as plain names for the hot paths: `Side.LONG` is a class-attribute lookup through the
# enum's metaclass, ~70 ns in Python 3.11, against ~6 ns for a module global.
LONG, SHORT = Side.LONG, Side.SHORT
OPPOSITE = {LONG: SHORT, SHORT: LONG}


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def display_date(ms: int) -> str:
    """YYYYMMDD in UTC, as the users asked."""
    return ms_to_datetime(ms).strftime("%Y%m%d")


def display_time(ms: int) -> str:
    """HH:MM:SS in UTC, as the users asked."""
    return ms_to_datetime(ms).strftime("%H:%M:%S")


def python_canonical_text(amount: Decimal) -> str:
    """The one text of a number: plain digits, no exponent, no trailing fractional zeros.

    "0.250", "0.25" and Decimal("2.5E-1") all give "0.25"; Decimal("1E+2") gives "100". Exact at
    any length: `format(amount, "f")` never rounds (`normalize()` would, past 28 digits).
    """
    text = str(amount)
    if "E" in text:
        text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def dedup_key(
    exchange: str, symbol: str, time_ms: int, side: str, price: Decimal, quantity: Decimal, extra: str = ""
) -> int:
    """A signed 63-bit key: the same liquidation re-delivered (reconnect, replay) gets the same key.

    blake2b-64 of "exchange|symbol|time|side|price|quantity" with amounts stripped of trailing zeros,
    then "|extra" when `extra` is given (see `dedup_key_of_texts`).
    """
    return dedup_key_of_texts(exchange, symbol, time_ms, side, canonical_text(price), canonical_text(quantity), extra)


def python_dedup_key_of_texts(
    exchange: str, symbol: str, time_ms: int, side: str, price: str, quantity: str, extra: str = ""
) -> int:
    """`dedup_key` from amounts already in their `canonical_text` (the adapters have it from the wire:
    `collector.validation.plain_number`), which spares two Decimal-to-text conversions per event.

    `extra` tells apart liquidations that agree on every other part: Bybit sends no id, so its
    adapter passes the frame's push time and the item's index in `data` ("1732400000500#3"), which
    a re-sent frame reproduces exactly. Empty: the key is the one `dedup_key` gives.
    `dedup_key_of_texts` is its C twin when built (the end of this module)."""
    if not extra:
        text = "|".join((exchange, symbol, str(time_ms), side, price, quantity))
    elif type(extra) is str:  # what f"{text}|{extra}" gives, in one step
        text = "|".join((exchange, symbol, str(time_ms), side, price, quantity, extra))
    else:
        text = f"{'|'.join((exchange, symbol, str(time_ms), side, price, quantity))}|{extra}"
    # blake2b(text, digest_size=8) as a copy of a keyless one (no keyword parsing, ~0.2 us less),
    # read as a signed big-endian int64 like int.from_bytes(digest, "big", signed=True).
    hasher = _FRESH_BLAKE2B_64()
    hasher.update(text.encode())
    return _INT64(hasher.digest())[0] >> 1


@dataclass(slots=True, init=False)
class Liquidation:
    """One liquidation, normalised. `sampled` marks venues that send at most one per second.

    The constructor is the one `@dataclass` would write (same parameters, same order, same
    defaults), written out so that a given key costs no `__post_init__` call: the adapters build
    one per liquidation on the hot path (bench/bench_parse.py).
    """

    exchange: str  # lower case: "binance", "bybit"
    symbol: str  # venue symbol, upper case: "BTCUSDT"
    side: Side  # the liquidated position
    quantity: Decimal  # base asset
    price: Decimal  # quote currency per base unit
    value_usd: Decimal  # quantity * price for USD(T/C)-quoted linear contracts
    time_ms: int  # exchange event time
    received_ms: int  # our receive time; the difference is feed latency
    raw_side: str  # the venue's own side field, kept for audit ("SELL", "Buy", ...)
    source: str  # "live" only from the real endpoints; "replay", "test", ... otherwise
    sampled: bool  # True for Binance: a lower bound, not the complete tape
    key: int = 0  # dedup key, computed by the constructor when left 0
    cascade_id: int | None = None
    risk_score: int | None = None

    def __init__(
        self,
        exchange: str,
        symbol: str,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        value_usd: Decimal,
        time_ms: int,
        received_ms: int,
        raw_side: str,
        source: str,
        sampled: bool,
        key: int = 0,
        cascade_id: int | None = None,
        risk_score: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.side = side
        self.quantity = quantity
        self.price = price
        self.value_usd = value_usd
        self.time_ms = time_ms
        self.received_ms = received_ms
        self.raw_side = raw_side
        self.source = source
        self.sampled = sampled
        self.key = key or dedup_key(exchange, symbol, time_ms, side, price, quantity)
        self.cascade_id = cascade_id
        self.risk_score = risk_score

    @property
    def is_cascade(self) -> bool:
        return self.cascade_id is not None

    @property
    def time(self) -> datetime:
        return ms_to_datetime(self.time_ms)

    @property
    def date_str(self) -> str:
        return display_date(self.time_ms)

    @property
    def time_str(self) -> str:
        return display_time(self.time_ms)


def python_new_liquidation(
    exchange: str,
    symbol: str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    value_usd: Decimal,
    time_ms: int,
    received_ms: int,
    raw_side: str,
    source: str,
    sampled: bool,
    key: int,
) -> Liquidation:
    """`Liquidation(...)` of an event whose key is known, for the adapters' hot path: the same object
    (every field set as the constructor sets it, tests/exchanges/test_hot_path.py) without the
    `type.__call__` and `__init__` dispatch. `new_liquidation` is its C twin when built."""
    event = _new_object(Liquidation)
    event.exchange = exchange
    event.symbol = symbol
    event.side = side
    event.quantity = quantity
    event.price = price
    event.value_usd = value_usd
    event.time_ms = time_ms
    event.received_ms = received_ms
    event.raw_side = raw_side
    event.source = source
    event.sampled = sampled
    event.key = key
    event.cascade_id = None
    event.risk_score = None
    return event


@dataclass(slots=True)
class Candle:
    """A 1-minute OHLCV candle; updates of an open minute replace each other (upsert by open time)."""

    exchange: str
    symbol: str
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal  # base asset
    quote_volume: Decimal
    closed: bool
    received_ms: int
    source: str


@dataclass(slots=True)
class StreamStatus:
    """A connection's life: opened, still alive (heartbeat), closed. Gaps between them are missing data."""

    exchange: str
    connection_id: str  # unique per connection attempt
    state: str  # "connected" | "heartbeat" | "disconnected"
    at_ms: int
    symbols: tuple[str, ...]
    source: str
    reason: str = ""


@dataclass(slots=True)
class Cascade:
    """Same-side liquidations of one symbol in quick succession, possibly on several exchanges."""

    id: int
    symbol: str
    side: Side
    start_ms: int
    end_ms: int
    count: int
    quantity: Decimal
    value_usd: Decimal
    counts: dict[str, int] = field(default_factory=dict)  # events per exchange
    peak_minute_ms: int = 0
    price_start: Decimal | None = None
    price_end: Decimal | None = None
    risk_score: int = 0
    active: bool = True
    source: str = "live"
    usd: dict[str, Decimal] = field(default_factory=dict)  # USD per exchange: each venue's share

    @property
    def exchanges(self) -> tuple[str, ...]:
        return tuple(sorted(self.counts))

    @property
    def cross_exchange(self) -> bool:
        return len(self.counts) >= 2

    @property
    def price_move_pct(self) -> Decimal | None:
        if not self.price_start or self.price_end is None:
            return None
        return (self.price_end - self.price_start) / self.price_start * 100


Event = Liquidation | Candle | StreamStatus | Cascade


# The adapters' per-liquidation calls in C when common/_events_native.c is built
# (scripts/build_native.py, run by `make venv` and the image): the same keys and the same objects
# (tests/exchanges/test_native_twins.py) for a fraction of the cost (the key's text is hashed
# without a hashlib object). Without it the Python functions above serve, slower; the collector
# says which at start (`NATIVE`).
try:
    from common import _events_native as _native
except ImportError:
    NATIVE = False
    dedup_key_of_texts = python_dedup_key_of_texts
    new_liquidation = python_new_liquidation
    canonical_text = python_canonical_text
else:
    _native.bind(
        Liquidation,
        tuple(f.name for f in fields(Liquidation)),
        python_dedup_key_of_texts,
        python_new_liquidation,
        python_canonical_text,
        Decimal,
    )
    NATIVE = True
    dedup_key_of_texts = _native.dedup_key_of_texts
    new_liquidation = _native.new_liquidation
    canonical_text = _native.canonical_text
