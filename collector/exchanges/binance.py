"""Binance USD-M futures: liquidations (`<symbol>@forceOrder`) and 1-minute candles (`<symbol>@kline_1m`).

One combined-stream connection per adapter: `{base}/stream?streams=btcusdt@forceOrder/btcusdt@kline_1m`,
so the subscription is in the URL and the connection counts as subscribed when it opens. Every
frame is wrapped as `{"stream": ..., "data": {...}}`. Binance pushes at most one liquidation per
symbol per second, so every row is `sampled=True` (a lower bound). Connections live at most 24 h:
we rotate at 23 h 50 m. Binance's protocol pings are answered by websockets itself.

Sides: `o.S` is the side of the liquidation ORDER: SELL closes a long (LONG liquidated), BUY
closes a short (SHORT liquidated). The opposite of Bybit's field of the same name.

A frame holds one event, checked like every item of every venue (`collector.validation`: a venue
symbol, plain decimal numbers, printable text); a bad one is dropped and counted by reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from websockets.asyncio.client import ClientConnection

from collector.exchanges.connection import ExchangeAdapter
from collector.validation import (
    Rejected,
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
    optional_text,
    parse_json,
    split_symbol,
    text_field,
    usd_value,
    volume,
)
from common.config import Settings
from common.events import Candle, Liquidation, Side, dedup_key_of_texts

EXCHANGE = "binance"
LIQUIDATIONS = "forceOrder"
CANDLES = "kline_1m"
# The order side tells which position was closed.
_SIDES = {"SELL": Side.LONG, "BUY": Side.SHORT}
_FILLED = "FILLED"
_PARTIALLY_FILLED = "PARTIALLY_FILLED"


def usd_value_of(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """USD value of a fill: USD-M symbols are linear (quantity * price); COIN-M ones (`BTCUSD_PERP`,
    on dstream.binance.com) count contracts of a fixed USD face value."""
    coin_margined = "_" in symbol and split_symbol(symbol)[1] == "USD"
    return usd_value(symbol, quantity, price, contracts=coin_margined)


def stream_names(symbols: tuple[str, ...]) -> list[str]:
    """The combined-stream names for our symbols, lower case as Binance wants them."""
    names: list[str] = []
    for symbol in symbols:
        names += [f"{symbol.lower()}@{LIQUIDATIONS}", f"{symbol.lower()}@{CANDLES}"]
    return names


def combined_url(base: str, symbols: tuple[str, ...]) -> str:
    return f"{base.rstrip('/')}/stream?streams={'/'.join(stream_names(symbols))}"


@dataclass(slots=True)
class BinanceForceOrder:
    """The `o` object of a forceOrder event, with Binance's field names."""

    s: str  # symbol, "BTCUSDT"
    S: str  # order side: "SELL" closes a long, "BUY" closes a short
    q: str  # original quantity
    p: str  # order price (bankruptcy-side limit)
    ap: str | None  # average fill price
    X: str  # order status: FILLED, PARTIALLY_FILLED, ...
    z: str | None  # accumulated filled quantity
    T: int  # trade time, ms

    def to_event(self, received_ms: int, source: str, max_age_ms: int | None) -> Liquidation:
        """Normalise: quantity z (else q), price ap (else p), only fills, USD value from one place.

        z and ap count as absent when missing, empty or zero; when present they must be plain
        numbers like every other amount (no falling back to q or p over a malformed one).
        """
        side = _SIDES.get(self.S)
        if side is None:
            raise Rejected("bad_value", f"side {self.S[:20]!r}")
        symbol = check_symbol(self.s)
        filled = optional_amount_text(self.z)
        if self.X != _FILLED and not (self.X == _PARTIALLY_FILLED and filled is not None):
            raise Rejected("not_filled", repr(self.X[:40]))
        size, quantity = filled if filled is not None else amount_text(self.q)
        price_text, price = optional_amount_text(self.ap) or amount_text(self.p)
        time_ms = check_time(self.T, received_ms, max_age_ms)
        return Liquidation(  # positional: keywords cost ~0.3 us per event
            EXCHANGE,  # exchange
            symbol,  # symbol
            side,  # side
            quantity,  # quantity
            price,  # price
            usd_value_of(symbol, quantity, price),  # value_usd
            time_ms,  # time_ms
            received_ms,  # received_ms
            self.S,  # raw_side
            source,  # source
            True,  # sampled
            dedup_key_of_texts(EXCHANGE, symbol, time_ms, side, price_text, size),  # key
        )


@dataclass(slots=True)
class BinanceKline:
    """The `k` object of a kline event, with Binance's field names."""

    t: int  # open time, ms: the candle's key
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
    """Binance USD-M combined stream for all configured symbols on one connection."""

    name: ClassVar[str] = EXCHANGE
    max_lifetime_s: ClassVar[float | None] = 23 * 3600 + 50 * 60

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        return settings.binance_ws_url

    def connect_url(self) -> str:
        return combined_url(self.url, self.symbols)

    async def subscribe(self, ws: ClientConnection) -> bool:
        # The streams are in the URL: an open connection is a subscribed one.
        return True

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """The dispatcher: one frame -> at most one event; bad input is counted, never raised."""
        try:
            _stream, data = decode(raw)
            kind = data.get("e")
            if kind == "forceOrder":
                return [self._on_force_order(data, raw, received_ms)]
            if kind == "kline":
                return self._on_kline(data, raw, received_ms)
            if "result" in data and "id" in data:
                return []  # reply to a SUBSCRIBE request: not data
            raise Rejected("unknown_message", repr(str(kind)[:40]))
        except Rejected as exc:
            self._drop(exc, raw)
        return []

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
        if kline.i != "1m":
            raise Rejected("unknown_message", f"kline {kline.i[:10]!r}")
        return [kline.to_event(received_ms, self.source, self.max_age_ms)]
