"""Bybit v5 linear: liquidations (`allLiquidation.<SYMBOL>`) and 1-minute candles (`kline.1.<SYMBOL>`).

Topics are spread over as many connections as Bybit's 21,000-character `args` cap per connection
needs (`ARGS_BUDGET` keeps a margin: about 500 symbols with both topics per connection).
Subscriptions go in batches of at most 10 topics, each acknowledged with `success` true or false;
a connection counts as subscribed once every batch is answered. A refusal is per topic
(`{"success":false,"ret_msg":"Invalid topic :[allLiquidation.BTCUSD]",...}`): the topics it names are
remembered as refused (shown in the health, not sent again until a refresh lists their symbol again)
and the rest of that batch is sent again without them; the connection carries on. A listing is
subscribed, a delisting unsubscribed (`op: unsubscribe`) on the open connection that holds it.
Bybit wants `{"op": "ping"}` every 20 s; its pong replies are acks that feed the silence watchdog,
not data. `allLiquidation` pushes every liquidation (complete tape, `sampled=False`) every 500 ms,
so one frame may carry many; Bybit sends no id, so the dedup key also takes the frame's `ts` and
the item's index in `data` (twins in one frame stay two, a re-sent frame dedups).

USD value: linear contracts are quantity x price in their quote (USDT, or USDC for `BTCPERP` and
`BTC-26DEC25`, whose names do not say it: the instrument list, else `guess_instrument`, tells),
USDC counted at par with USD. `p` is the bankruptcy price.

Sides: `S` is the POSITION side: "Buy" = a long was liquidated (LONG), "Sell" = a short (SHORT).
The opposite of Binance's field of the same name.

Every item of a frame is checked on its own (`collector.validation`: a venue symbol, plain
decimal numbers, printable text): a bad item is dropped and counted by reason, even a parser bug
costs that item only, and the rest of the frame is kept.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from collector.exchanges.connection import ExchangeAdapter, Shard
from collector.health import one_line
from collector.validation import (
    MAX_VALUE_USD,
    USD_QUOTES,
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
    list_field,
    parse_object,
    price_text,
    text_field,
    volume,
)
from common.events import Candle, Liquidation, Side, dedup_key_of_texts, new_liquidation
from common.instruments import Instrument, guess_instrument

decode = parse_object  # a frame: one JSON object (collector.validation)
EXCHANGE = "bybit"
LIQUIDATIONS = "allLiquidation"
CANDLES = "kline.1"
SUBSCRIBE_BATCH = 10
ARGS_CAP = 21_000  # characters of `args` one public connection may hold
ARGS_BUDGET = 18_000  # what we fill, a margin below the cap

# How a liquidation frame begins as Bybit writes it: a hint for the one-pass decoder, never a rule
# (what the hint picks is still decoded and checked in full, the rest goes the two-step way).
_LIQUIDATION_HINT = '{"topic":"allLiquidation.'
_LIQUIDATION_HINT_BYTES = _LIQUIDATION_HINT.encode()

# The position side is the liquidated side.
_SIDES = {"Buy": Side.LONG, "Sell": Side.SHORT}


def topics(symbols: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for symbol in symbols:
        out += [f"{LIQUIDATIONS}.{symbol}", f"{CANDLES}.{symbol}"]
    return out


class BybitLiquidation(msgspec.Struct, gc=False):
    """One item of an allLiquidation frame's `data`, with Bybit's field names (decoded straight from
    the frame by `_decode_liquidations`, or built from a dict by `parse_liquidation`)."""

    T: WireInt  # liquidation time, ms
    s: str  # symbol
    S: str  # position side: "Buy" = long liquidated, "Sell" = short liquidated
    v: str  # executed size, base asset for linear
    p: str  # bankruptcy price

    def to_event(
        self,
        received_ms: int,
        source: str,
        max_age_ms: int | None,
        where: str = "",
        instrument_of: Callable[[str, str], Instrument] = guess_instrument,
    ) -> Liquidation:
        """Normalise: a venue symbol, plain numbers made canonical, the key from their canonical text
        and `where` (the frame's `ts` and the item's index: "1732400000500#0")."""
        side = _SIDES.get(self.S)
        if side is None:
            raise Rejected("bad_value", f"side {self.S[:20]!r}")
        symbol = check_symbol(self.s)
        size, quantity = amount_text(self.v)
        canonical_price, price = price_text(self.p)
        time_ms = check_time(self.T, received_ms, max_age_ms)
        quote = instrument_of(EXCHANGE, symbol).quote
        if quote not in USD_QUOTES:
            raise Rejected("bad_value", f"no USD quote in {symbol}")
        value = quantity * price  # linear: base quantity x price in USDT or USDC, USDC at par
        if value > MAX_VALUE_USD:  # a product of two positive amounts (`amount_text`): never zero
            raise Rejected("bad_value", f"value {value}")
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
            False,  # sampled
            dedup_key_of_texts(EXCHANGE, symbol, time_ms, side, canonical_price, size, where),  # key
        )


@dataclass(slots=True)
class BybitKline:
    """One item of a kline frame's `data` (the symbol comes from the topic), with Bybit's field names."""

    symbol: str  # from the topic "kline.1.<symbol>"
    start: int  # open time, ms: the candle's key
    interval: str  # "1"
    open: str
    high: str
    low: str
    close: str
    volume: str  # base asset
    turnover: str  # quote asset
    confirm: bool  # the minute is closed

    def to_event(self, received_ms: int, source: str, max_age_ms: int | None) -> Candle:
        symbol = check_symbol(self.symbol)
        low, high = candle_price(self.low), candle_price(self.high)
        if low > high:
            raise Rejected("bad_value", "low above high")
        return Candle(  # positional: keywords cost ~0.3 us per event
            EXCHANGE,  # exchange
            symbol,  # symbol
            check_time(self.start, received_ms, max_age_ms),  # open_ms
            candle_price(self.open),  # open
            high,  # high
            low,  # low
            candle_price(self.close),  # close
            volume(self.volume),  # volume
            volume(self.turnover),  # quote_volume
            self.confirm,  # closed
            received_ms,  # received_ms
            source,  # source
        )


class _Frame(msgspec.Struct, gc=False):
    """A data frame as far as the fast path reads it; `data` is decoded by topic."""

    topic: str  # "allLiquidation.BTCUSDT", "kline.1.BTCUSDT"
    data: msgspec.Raw  # the items, still JSON
    ts: WireInt | None = None  # push time, ms


class _LiquidationFrame(msgspec.Struct, gc=False):
    """An allLiquidation frame read in one pass (`_Frame` and its items at once)."""

    topic: str  # "allLiquidation.BTCUSDT"
    data: list[BybitLiquidation]
    ts: WireInt | None = None  # push time, ms


class _KlineItem(msgspec.Struct, gc=False):
    """One item of a kline frame's `data`, as far as `BybitKline` reads it."""

    start: WireInt
    interval: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    turnover: str
    confirm: bool


# The usual data frame decoded and type-checked in one pass, no dicts for the fields nobody reads.
# Whatever they refuse (a wrong type or a missing field in any item, bad JSON) goes the general
# way, item by item, which names the reason of each drop; they accept nothing it would refuse
# before `to_event()`.
_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_liquidation_frame = msgspec.json.Decoder(_LiquidationFrame).decode
_decode_liquidations = msgspec.json.Decoder(list[BybitLiquidation]).decode
_decode_klines = msgspec.json.Decoder(list[_KlineItem]).decode


def parse_liquidation(item: Any) -> BybitLiquidation:
    """Parse one `data` item of an allLiquidation frame. Sample frame::

    {"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1732400000500,
     "data":[{"T":1732400000321,"s":"BTCUSDT","S":"Buy","v":"0.250","p":"97012.50"},
             {"T":1732400000377,"s":"BTCUSDT","S":"Sell","v":"0.004","p":"97655.00"}]}
    """
    if type(item) is not dict:
        raise Rejected("bad_field", "data item")
    get = item.get
    T, s, S, v, p = get("T"), get("s"), get("S"), get("v"), get("p")
    if type(T) is int and type(s) is str and type(S) is str and type(v) is str and type(p) is str:
        return BybitLiquidation(T, s, S, v, p)
    # Slow path, only for bad input: name the first field that is wrong.
    return BybitLiquidation(
        T=int_field(item, "T"),
        s=text_field(item, "s"),
        S=text_field(item, "S"),
        v=text_field(item, "v"),
        p=text_field(item, "p"),
    )


def parse_kline(item: Any, symbol: str) -> BybitKline:
    """Parse one `data` item of a kline frame. Sample frame::

    {"topic":"kline.1.BTCUSDT","type":"snapshot","ts":1732400060012,
     "data":[{"start":1732400000000,"end":1732400059999,"interval":"1","open":"97300","close":"97210.1",
              "high":"97410","low":"97150.2","volume":"388.21","turnover":"37766554.2","confirm":false,
              "timestamp":1732400060012}]}
    """
    if type(item) is not dict:
        raise Rejected("bad_field", "data item")
    get = item.get
    start, interval, o, h, low, c, v, turnover = (
        get("start"),
        get("interval"),
        get("open"),
        get("high"),
        get("low"),
        get("close"),
        get("volume"),
        get("turnover"),
    )
    confirm = get("confirm")
    if (
        type(start) is int
        and type(interval) is str
        and type(o) is str
        and type(h) is str
        and type(low) is str
        and type(c) is str
        and type(v) is str
        and type(turnover) is str
        and type(confirm) is bool
    ):
        return BybitKline(symbol, start, interval, o, h, low, c, v, turnover, confirm)
    # Slow path, only for bad input: name the first field that is wrong.
    return BybitKline(
        symbol=symbol,
        start=int_field(item, "start"),
        interval=text_field(item, "interval"),
        open=text_field(item, "open"),
        high=text_field(item, "high"),
        low=text_field(item, "low"),
        close=text_field(item, "close"),
        volume=text_field(item, "volume"),
        turnover=text_field(item, "turnover"),
        confirm=bool_field(item, "confirm"),
    )


class BybitAdapter(ExchangeAdapter):
    """Bybit v5 public linear streams, sharded over connections within the `args` cap."""

    name: ClassVar[str] = EXCHANGE
    ping_interval_s: ClassVar[float | None] = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._req_ids = itertools.count(1)
        super().__init__(*args, **kwargs)

    def streams_of(self, symbol: str, candles: bool) -> list[str]:
        return [f"{LIQUIDATIONS}.{symbol}", f"{CANDLES}.{symbol}"] if candles else [f"{LIQUIDATIONS}.{symbol}"]

    def shard_fits(self, shard: Shard, streams: list[str]) -> bool:
        used = sum(len(t) + 3 for t in shard.wanted)  # each topic as JSON: quotes and a comma
        return used + sum(len(t) + 3 for t in streams) <= ARGS_BUDGET

    def subscribe(self, shard: Shard) -> bool:
        """Send the topics in batches of 10; confirmed later, when every batch is answered."""
        self.request(shard, True, [t for t in shard.wanted if t not in self.refused])
        return not shard.pending

    def request(self, shard: Shard, subscribe: bool, streams: list[str]) -> None:
        op = "subscribe" if subscribe else "unsubscribe"
        for start in range(0, len(streams), SUBSCRIBE_BATCH):
            batch = streams[start : start + SUBSCRIBE_BATCH]
            req_id = f"{'sub' if subscribe else 'unsub'}-{next(self._req_ids)}"
            shard.pending[req_id] = (subscribe, batch)
            shard.send(json.dumps({"req_id": req_id, "op": op, "args": batch}, ensure_ascii=False))

    def ping_message(self) -> str:
        return json.dumps({"req_id": f"ping-{next(self._req_ids)}", "op": "ping"})

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """The dispatcher: by topic for data, by op for acks; bad input is counted, never raised.

        The usual data frame (a clean one, see `clean_frame`, so no text field needs `check_texts`)
        is decoded into the raw schema in one pass; a frame the typed decoders refuse, and every
        other message, is parsed the general way, which names the reason of each drop.
        """
        if clean_frame(raw):
            events = self._fast(raw, received_ms)
            if events is not None:
                return events
        try:
            msg = decode(raw)
            topic = msg.get("topic")
            if type(topic) is str:
                kind, _, rest = topic.partition(".")
                if kind == LIQUIDATIONS:
                    return self._on_liquidations(msg, raw, received_ms)
                if kind == "kline" and rest.startswith("1."):
                    return self._on_klines(msg, raw, rest[2:], received_ms)
                raise Rejected("unknown_message", topic[:40])
            if "op" in msg:
                self._on_op(msg)
                return []
            raise Rejected("unknown_message")
        except Rejected as exc:
            self._drop(exc, raw)
        return []

    def _fast(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle] | None:
        """The events of a clean data frame the typed decoders accept; None: parse it the general way."""
        try:
            if raw.startswith(_LIQUIDATION_HINT) if isinstance(raw, str) else raw.startswith(_LIQUIDATION_HINT_BYTES):
                # Written as Bybit writes it, topic first: most likely liquidations, read in one pass.
                try:
                    liquidations = _decode_liquidation_frame(raw)
                except msgspec.DecodeError:
                    pass  # not what the hint promised (a wrong type, another shape): the two-step reading
                else:
                    if liquidations.topic.partition(".")[0] == LIQUIDATIONS:
                        pushed = str(liquidations.ts) if liquidations.ts is not None else ""
                        return self._liquidation_events(liquidations.data, pushed, raw, received_ms)
            frame = _decode_frame(raw)
            kind, _, rest = frame.topic.partition(".")
            if kind == LIQUIDATIONS:
                pushed = str(frame.ts) if frame.ts is not None else ""
                return self._liquidation_events(_decode_liquidations(frame.data), pushed, raw, received_ms)
            if kind == "kline" and rest.startswith("1."):
                symbol = rest[2:]
                klines = [BybitKline(symbol, *msgspec.structs.astuple(k)) for k in _decode_klines(frame.data)]
                return self._kline_events(klines, raw, received_ms)
        except (msgspec.DecodeError, RecursionError):
            pass
        return None

    def _on_liquidations(self, msg: dict[str, Any], raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        # One bad item must not cost the good ones of the same frame, whatever is wrong with it.
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        ts = msg.get("ts")
        pushed = str(ts) if type(ts) is int else ""
        for index, item in enumerate(list_field(msg, "data")):
            try:
                liquidation = parse_liquidation(item)
                if not clean:
                    check_texts(item, skip="s")
                where = f"{pushed}#{index}"
                events.append(
                    liquidation.to_event(received_ms, self.source, self.max_age_ms, where, self.instrument_of)
                )
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _liquidation_events(
        self, items: list[BybitLiquidation], pushed: str, raw: str | bytes, received_ms: int
    ) -> list[Liquidation | Candle]:
        """`_on_liquidations` for items the typed decoder read: each one still costs only itself."""
        events: list[Liquidation | Candle] = []
        source, max_age_ms, instrument_of = self.source, self.max_age_ms, self.instrument_of
        for index, liquidation in enumerate(items):
            try:
                events.append(liquidation.to_event(received_ms, source, max_age_ms, f"{pushed}#{index}", instrument_of))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _kline_events(self, klines: list[BybitKline], raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        events: list[Liquidation | Candle] = []
        for kline in klines:
            try:
                events.append(kline.to_event(received_ms, self.source, self.max_age_ms))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_klines(
        self, msg: dict[str, Any], raw: str | bytes, symbol: str, received_ms: int
    ) -> list[Liquidation | Candle]:
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        for item in list_field(msg, "data"):
            try:
                kline = parse_kline(item, symbol)
                if not clean:
                    check_texts(item)
                events.append(kline.to_event(received_ms, self.source, self.max_age_ms))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_op(self, msg: dict[str, Any]) -> None:
        """Answers to our requests. Sample refusal::

        {"success":false,"ret_msg":"Invalid topic :[allLiquidation.BTCUSD]","conn_id":"...",
         "req_id":"sub-3","op":"subscribe"}

        A refusal costs the topics it names, never the connection; pongs only prove the line is alive.
        """
        op = msg.get("op")
        if op in ("ping", "pong"):
            return
        if op not in ("subscribe", "unsubscribe"):
            raise Rejected("unknown_message", f"op {str(op)[:20]}")
        shard = self.current
        if shard is None:
            return
        ok = msg.get("success") is True
        reason = "" if ok else one_line(str(msg.get("ret_msg", "")), 200) or "refused"
        self._answered(shard, str(msg.get("req_id")), ok, reason)
