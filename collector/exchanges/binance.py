"""Binance USD-M futures: liquidations (`!forceOrder@arr` or `<symbol>@forceOrder`) and 1-minute
candles (`<symbol>@kline_1m`).

Whole market (LIQ_SYMBOLS=ALL): every liquidation comes from the one `!forceOrder@arr` stream, on a
connection of its own (it may be quiet for minutes: the silence watchdog probes it with a protocol
ping instead of calling it dead). An explicit list keeps one `<symbol>@forceOrder` per symbol, next
to its candles: exactly the streams asked for, no filtering, and what recorded sessions replay.
Candles and per-symbol streams are spread over connections of at most `MAX_STREAMS` streams
(Binance allows 1024 per connection; 200 keeps the URL and the opening burst small). A connection
URL holds as many of its streams as fit in `URL_BUDGET` characters
(`{base}/stream?streams=a@kline_1m/b@kline_1m`); the rest, and every later listing, go in
`{"method":"SUBSCRIBE","params":[...],"id":n}` messages (answered `{"result":null,"id":n}`) of at
most `PARAMS_PER_MESSAGE` streams, at most 5 messages a second per connection (the venue allows 10);
a delisting is an UNSUBSCRIBE. Stream names are the symbol lower-cased as Binance wants it
(`币安人生usdt`: non-ASCII letters lower-case to themselves).

Every frame is wrapped as `{"stream": ..., "data": {...}}`. Binance pushes at most one
liquidation per symbol per second, so every row is `sampled=True` (a lower bound). Connections
live at most 24 h: at 23 h 50 m each one is rotated make-before-break (the successor is open and
subscribed before the old one closes; the dedup key absorbs what both saw). Binance's protocol
pings are answered by websockets itself.

Sides: `o.S` is the side of the liquidation ORDER: SELL closes a long (LONG liquidated), BUY
closes a short (SHORT liquidated). The opposite of Bybit's field of the same name.

A frame holds one event, checked like every item of every venue (`collector.validation`: a venue
symbol, plain decimal numbers, printable text); a bad one is dropped and counted by reason.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from collector.exchanges.connection import ExchangeAdapter, Shard
from collector.health import one_line
from collector.validation import (
    MAX_VALUE_USD,
    Rejected,
    WireInt,
    amount_text,
    bool_field,
    candle_price,
    check_symbol,
    check_texts,
    check_time,
    clean_frame,
    int_field,
    object_field,
    optional_amount_text,
    optional_price_text,
    optional_text,
    parse_json,
    price_text,
    split_symbol,
    text_field,
    usd_value,
    volume,
)
from common.events import Candle, Liquidation, Side, dedup_key_of_texts, new_liquidation

EXCHANGE = "binance"
LIQUIDATIONS = "forceOrder"
CANDLES = "kline_1m"
# The order side tells which position was closed.
_SIDES = {"SELL": Side.LONG, "BUY": Side.SHORT}
_FILLED = "FILLED"
ALL_LIQUIDATIONS = "!forceOrder@arr"
# Symbols already checked (`check_symbol`), with whether their USD value is quantity x price.
_CHECKED: dict[str, bool] = {}
_CHECKED_MAX = 8192
MAX_STREAMS = 200
URL_BUDGET = 2000
PARAMS_PER_MESSAGE = 100


def usd_value_of(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """USD value of a fill: USD-M symbols are linear (quantity * price); COIN-M ones (`BTCUSD_PERP`,
    on dstream.binance.com) count contracts of a fixed USD face value."""
    coin_margined = "_" in symbol and split_symbol(symbol)[1] == "USD"
    return usd_value(symbol, quantity, price, contracts=coin_margined)


def _checked_symbol(symbol: str) -> bool:
    """`check_symbol(symbol)` (or `Rejected("bad_symbol")`), then whether its USD value is simply
    quantity x price (`usd_value_of` of a linear USD(T/C) symbol), remembered for the next event."""
    check_symbol(symbol)
    linear = not ("_" in symbol and split_symbol(symbol)[1] == "USD") and split_symbol(symbol)[1] != ""
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED[symbol] = linear
    return linear


def stream_names(symbols: tuple[str, ...] | list[str]) -> list[str]:
    """The combined-stream names for our symbols, lower case as Binance wants them."""
    names: list[str] = []
    for symbol in symbols:
        names += [f"{symbol.lower()}@{LIQUIDATIONS}", f"{symbol.lower()}@{CANDLES}"]
    return names


def combined_url(base: str, symbols: tuple[str, ...]) -> str:
    return streams_url(base, stream_names(symbols))


def streams_url(base: str, streams: list[str]) -> str:
    return f"{base.rstrip('/')}/stream?streams={'/'.join(streams)}"


class BinanceForceOrder(msgspec.Struct, gc=False):
    """The `o` object of a forceOrder event, with Binance's field names (decoded straight from the
    frame by `_decode_combined`, or built from a dict by `parse_force_order`)."""

    s: str  # symbol, "BTCUSDT"
    S: str  # order side: "SELL" closes a long, "BUY" closes a short
    q: str  # original quantity
    p: str  # order price (bankruptcy-side limit)
    ap: str | None  # average fill price
    X: str  # order status: FILLED, PARTIALLY_FILLED, EXPIRED (an IOC order filled in part), ...
    z: str | None  # accumulated filled quantity
    T: WireInt  # trade time, ms

    def to_event(self, received_ms: int, source: str, max_age_ms: int | None) -> Liquidation:
        """Normalise: quantity z (else q), price ap (else p), only fills, USD value from one place.

        Any status with a filled quantity `z > 0` is a fill (a partly filled IOC liquidation ends
        EXPIRED); without one only FILLED counts, for q. z and ap count as absent when missing,
        empty or zero; when present they must be plain numbers like every other amount (no falling
        back to q or p over a malformed one).
        """
        side = _SIDES.get(self.S)
        if side is None:
            raise Rejected("bad_value", f"side {self.S[:20]!r}")
        symbol = self.s
        linear = _CHECKED.get(symbol)
        if linear is None:
            linear = _checked_symbol(symbol)
        z = self.z
        filled = None
        if z:
            try:
                filled = amount_text(z)
            except Rejected:  # zero ("0", "0.000") is no fill; anything else is refused as it was
                filled = optional_amount_text(z)
        if filled is None and self.X != _FILLED:
            raise Rejected("not_filled", repr(self.X[:40]))
        size, quantity = filled if filled is not None else amount_text(self.q)
        canonical_price, price = optional_price_text(self.ap) or price_text(self.p)
        time_ms = check_time(self.T, received_ms, max_age_ms)
        if linear:  # `usd_value_of` written out for the usual symbol
            value = quantity * price
            if value > MAX_VALUE_USD:  # a product of two positive amounts (`amount_text`): never zero
                raise Rejected("bad_value", f"value {value}")
        else:
            value = usd_value_of(symbol, quantity, price)
        return new_liquidation(  # `Liquidation(...)` with its key; positional: keywords cost ~0.3 us
            EXCHANGE,  # exchange
            symbol,  # symbol
            side,  # side
            quantity,  # quantity
            price,  # price
            value,  # value_usd
            time_ms,  # time_ms
            received_ms,  # received_ms
            self.S,  # raw_side
            source,  # source
            True,  # sampled
            dedup_key_of_texts(EXCHANGE, symbol, time_ms, side, canonical_price, size),  # key
        )


class BinanceKline(msgspec.Struct, gc=False):
    """The `k` object of a kline event, with Binance's field names."""

    t: WireInt  # open time, ms: the candle's key
    s: str  # symbol
    i: str  # interval, "1m"
    o: str  # open
    h: str  # high
    l: str  # low  # noqa: E741 (Binance's own name)
    c: str  # close
    v: str  # base asset volume
    q: str  # quote asset volume
    x: bool  # the minute is closed

    def to_event(self, received_ms: int, source: str, max_age_ms: int | None) -> Candle:
        symbol = check_symbol(self.s)
        low, high = candle_price(self.l), candle_price(self.h)
        if low > high:
            raise Rejected("bad_value", "low above high")
        return Candle(  # positional: keywords cost ~0.3 us per event
            EXCHANGE,  # exchange
            symbol,  # symbol
            check_time(self.t, received_ms, max_age_ms),  # open_ms
            candle_price(self.o),  # open
            high,  # high
            low,  # low
            candle_price(self.c),  # close
            volume(self.v),  # volume
            volume(self.q),  # quote_volume
            self.x,  # closed
            received_ms,  # received_ms
            source,  # source
        )


class _Payload(msgspec.Struct, gc=False):
    """The `data` of a combined frame, as far as the fast path reads it."""

    e: str  # event type: "forceOrder", "kline", ...
    o: BinanceForceOrder | None = None  # the order of a forceOrder event
    k: BinanceKline | None = None  # the candle of a kline event


class _Combined(msgspec.Struct, gc=False):
    """A combined-stream frame: `{"stream": ..., "data": {...}}`."""

    stream: str
    data: _Payload


# Decodes and type-checks the usual frame in one pass (no dicts for the fields nobody reads).
# Whatever it refuses (a wrong type, a missing field, bad JSON) goes the general way, which names
# the reason; it accepts nothing the general way would refuse before `to_event()`.
_decode_combined = msgspec.json.Decoder(_Combined).decode


def decode(raw: str | bytes) -> tuple[str, dict[str, Any]]:
    """Parse a combined frame into (stream name, payload); a raw-stream payload gets stream ""."""
    msg = parse_json(raw)
    if type(msg) is not dict:
        raise Rejected("bad_json", "not an object")
    data = msg.get("data")
    if data is None:
        return "", msg
    stream = msg.get("stream")
    if type(data) is not dict or type(stream) is not str:
        raise Rejected("bad_field", "stream/data")
    return stream, data


def parse_force_order(data: dict[str, Any]) -> BinanceForceOrder:
    """Parse a forceOrder payload. Sample (combined frame, `data` part)::

    {"e":"forceOrder","E":1732400000123,
     "o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"97210.10",
          "ap":"97354.60","X":"FILLED","l":"0.014","z":"0.014","T":1732400000119}}
    """
    o = object_field(data, "o")
    get = o.get
    s, S, q, p, ap, X, z, T = get("s"), get("S"), get("q"), get("p"), get("ap"), get("X"), get("z"), get("T")
    if (
        type(s) is str
        and type(S) is str
        and type(q) is str
        and type(p) is str
        and type(X) is str
        and type(T) is int
        and (ap is None or type(ap) is str)
        and (z is None or type(z) is str)
    ):
        return BinanceForceOrder(s, S, q, p, ap, X, z, T)
    # Slow path, only for bad input: name the first field that is wrong.
    return BinanceForceOrder(
        s=text_field(o, "s"),
        S=text_field(o, "S"),
        q=text_field(o, "q"),
        p=text_field(o, "p"),
        ap=optional_text(o, "ap"),
        X=text_field(o, "X"),
        z=optional_text(o, "z"),
        T=int_field(o, "T"),
    )


def parse_kline(data: dict[str, Any]) -> BinanceKline:
    """Parse a kline payload. Sample (combined frame, `data` part)::

    {"e":"kline","E":1732400060012,"s":"BTCUSDT",
     "k":{"t":1732400000000,"T":1732400059999,"s":"BTCUSDT","i":"1m","f":5500000001,"L":5500001200,
          "o":"97300.0","c":"97210.1","h":"97410.0","l":"97150.2","v":"412.337","n":1200,"x":false,
          "q":"40115322.51","V":"201.1","Q":"19566231.02","B":"0"}}
    """
    k = object_field(data, "k")
    get = k.get
    t, s, i, o, h, low, c, v = get("t"), get("s"), get("i"), get("o"), get("h"), get("l"), get("c"), get("v")
    q, x = get("q"), get("x")
    if (
        type(t) is int
        and type(s) is str
        and type(i) is str
        and type(o) is str
        and type(h) is str
        and type(low) is str
        and type(c) is str
        and type(v) is str
        and type(q) is str
        and type(x) is bool
    ):
        return BinanceKline(t, s, i, o, h, low, c, v, q, x)
    # Slow path, only for bad input: name the first field that is wrong.
    return BinanceKline(
        t=int_field(k, "t"),
        s=text_field(k, "s"),
        i=text_field(k, "i"),
        o=text_field(k, "o"),
        h=text_field(k, "h"),
        l=text_field(k, "l"),
        c=text_field(k, "c"),
        v=text_field(k, "v"),
        q=text_field(k, "q"),
        x=bool_field(k, "x"),
    )


class BinanceAdapter(ExchangeAdapter):
    """Binance USD-M combined streams, spread over as many connections as the list needs."""

    name: ClassVar[str] = EXCHANGE
    max_lifetime_s: ClassVar[float | None] = 23 * 3600 + 50 * 60
    make_before_break: ClassVar[bool] = True
    messages_per_s: ClassVar[float] = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ids = itertools.count(1)
        super().__init__(*args, **kwargs)

    def fixed_streams(self) -> list[Shard]:
        if not self.whole_market:
            return []
        return [Shard(f"{EXCHANGE}-liquidations", [ALL_LIQUIDATIONS], idle_ok=True, fixed=True)]

    def streams_of(self, symbol: str, candles: bool) -> list[str]:
        name = symbol.lower()
        streams = [] if self.whole_market else [f"{name}@{LIQUIDATIONS}"]
        return [*streams, f"{name}@{CANDLES}"] if candles else streams

    def shard_fits(self, shard: Shard, streams: list[str]) -> bool:
        return len(shard.wanted) + len(streams) <= MAX_STREAMS

    def may_idle(self, shard: Shard) -> bool:
        return shard.idle_ok or not any(s.endswith(f"@{CANDLES}") for s in shard.wanted)

    def connect_url(self, shard: Shard) -> str:
        shard.in_url, used = [], 0
        for stream in shard.wanted:
            if shard.in_url and used + len(stream) + 1 > URL_BUDGET:
                break
            shard.in_url.append(stream)
            used += len(stream) + 1
        return streams_url(self.url, shard.in_url)

    def subscribe(self, shard: Shard) -> bool:
        # The streams in the URL are subscribed by opening it; the rest go in SUBSCRIBE messages.
        shard.active.update(shard.in_url)
        self.request(shard, True, [s for s in shard.wanted if s not in shard.active])
        return not shard.pending

    def request(self, shard: Shard, subscribe: bool, streams: list[str]) -> None:
        for start in range(0, len(streams), PARAMS_PER_MESSAGE):
            batch = streams[start : start + PARAMS_PER_MESSAGE]
            req_id = next(self._ids)
            shard.pending[str(req_id)] = (subscribe, batch)
            method = "SUBSCRIBE" if subscribe else "UNSUBSCRIBE"
            shard.send(json.dumps({"method": method, "params": batch, "id": req_id}, ensure_ascii=False))

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """The dispatcher: one frame -> at most one event; bad input is counted, never raised.

        The usual frame (a clean one, see `clean_frame`, so no text field needs `check_texts`) is
        decoded into the raw schema in one pass; anything the typed decoder refuses, and every
        other message, is parsed the general way, which names the reason of a drop.
        """
        if clean_frame(raw):
            try:
                payload = _decode_combined(raw).data
            except (msgspec.DecodeError, RecursionError):
                pass
            else:
                try:
                    if payload.e == "forceOrder" and payload.o is not None:
                        return [payload.o.to_event(received_ms, self.source, self.max_age_ms)]
                    if payload.e == "kline" and payload.k is not None:
                        return [self._kline_event(payload.k, received_ms)]
                except Rejected as exc:
                    self._drop(exc, raw)
                    return []
        try:
            _stream, data = decode(raw)
            kind = data.get("e")
            if kind == "forceOrder":
                return [self._on_force_order(data, raw, received_ms)]
            if kind == "kline":
                return self._on_kline(data, raw, received_ms)
            if "id" in data and ("result" in data or "error" in data):
                self._on_reply(data)  # the answer to a (UN)SUBSCRIBE request: not data
                return []
            raise Rejected("unknown_message", repr(str(kind)[:40]))
        except Rejected as exc:
            self._drop(exc, raw)
        return []

    def _on_reply(self, data: dict[str, Any]) -> None:
        """`{"result":null,"id":1}` accepts request 1; `{"error":{"code":2,"msg":"..."},"id":1}` refuses it."""
        shard = self.current
        if shard is None:
            return
        error = data.get("error")
        reason = "" if error is None else one_line(str(error.get("msg") if isinstance(error, dict) else error), 200)
        self._answered(shard, str(data.get("id")), error is None, reason)

    def _on_force_order(self, data: dict[str, Any], raw: str | bytes, received_ms: int) -> Liquidation:
        order = parse_force_order(data)
        if not clean_frame(raw):
            check_texts(data)
            check_texts(data["o"], skip="s")
        return order.to_event(received_ms, self.source, self.max_age_ms)

    def _on_kline(self, data: dict[str, Any], raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        kline = parse_kline(data)
        if not clean_frame(raw):
            check_texts(data)
            check_texts(data["k"], skip="s")
        return [self._kline_event(kline, received_ms)]

    def _kline_event(self, kline: BinanceKline, received_ms: int) -> Candle:
        if kline.i != "1m":
            raise Rejected("unknown_message", f"kline {kline.i[:10]!r}")
        return kline.to_event(received_ms, self.source, self.max_age_ms)
