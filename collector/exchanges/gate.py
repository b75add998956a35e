"""Gate USDT perpetual futures: liquidations (`futures.public_liquidates`) and 1-minute candles
(`futures.candlesticks`), on `wss://fx-ws.gateio.ws/v4/ws/usdt`.

Perpetuals only: Gate's dated USDT futures are another API (`/delivery/usdt/contracts`, another
WebSocket URL) and are not followed.

Whole market (LIQ_SYMBOLS=ALL): every liquidation comes from one subscription with the payload
`["!all"]` ("If you want to subscribe to liquidates order push in all contracts, use `!all` in the
subscription request list", Gate Futures WebSocket v4, public liquidates order API), on a connection
of its own that may stay quiet for minutes (idle_ok: probed, not called dead). An explicit list
subscribes its contracts by name. Candles are one `["1m", "<contract>"]` subscription each, spread
over connections of at most `MAX_STREAMS` streams.

Streams are plain strings, `<channel>.<payload>`: `futures.public_liquidates.!all`,
`futures.public_liquidates.BTC_USDT`, `futures.candlesticks.1m.BTC_USDT`. Requests are
`{"time": <s>, "id": n, "channel": ..., "event": "subscribe", "payload": [...]}` (the docs: `id` is
an "optional request id which will be sent back by the server"); liquidation subscriptions go at most
`PAYLOAD_BATCH` contracts a message. The answer is `{"time":..,"channel":..,"event":"subscribe",
"result":{"status":"success"}}`, or carries an `error` object (`{"code": 2, "message": "..."}`;
the docs: "To verify if subscription request is successful or not, you only need to check if `error`
field is null"). A refusal names contracts: the streams of the contracts it names are refused (kept
in `refused`, shown in the health), the rest of the request is sent again; a refusal that names none
is narrowed down by halves (`ExchangeAdapter._answered`). Gate wants an application ping
`{"time": <s>, "channel": "futures.ping"}`, answered `{"channel": "futures.pong", ...}`.

Sampling: the docs say "each contract can push up to one liquidate order data every 1 second" (the
channel was added 2025-02-19, "to push liquidate orders snapshot"), so rows are `sampled=True`, a
lower bound. (A later change to every liquidation within at most one second could not be found in
the docs available here.) One frame may carry several contracts' items and, should Gate push more
than one a contract, several of one contract: Gate sends no id, so the dedup key also takes the
frame's `time_ms` and the item's index in `result` (twins in one frame stay two rows, a re-sent frame
dedups).

Sizes are CONTRACTS: base quantity = |size| x `quanto_multiplier` of the contract ("how many units of
the underlying asset the face value of one contract represents", REST `GET /futures/usdt/contracts`),
which the instrument list gives (`Instrument.contract_size`). An item whose contract no list has
named is dropped as `unknown_instrument`: a guessed instrument cannot convert contracts.
The price is quote (USDT) per base unit, so USD value = base quantity x price (USDC at par).

Price basis: the docs give one price, `price`, "order price" (the liquidation order's price); an
item that also carries REST's `fill_price` ("Liquidation order average taker price",
`GET /futures/usdt/liq_orders`) is valued at that fill price instead.

Sides: the docs define `size` as the "liquidate order quantity", signed like every Gate order size
("Order size. Specify positive number to make a bid, and negative number to ask", futures.orders;
"Positive size means taker is buyer, negative seller", futures.trades). A negative size is a sell
order, which closes a LONG position (LONG liquidated); a positive one a buy, closing a SHORT. Should
an item carry REST's `order_size` ("Number of forced liquidation orders") too, `size` is REST's "User
position size" there and `order_size` is read instead, with the same order-side rule.

Candles: `t` open time in seconds, `o/h/l/c` prices, `v` volume in contracts, `n` "1m_<contract>",
`w` true once the minute is closed (may be missing). Volume = v x `quanto_multiplier` (base); the
frame has no quote volume (`a`, "Amount", is not documented for futures as a quote amount), so
`quote_volume` is an estimate: base volume x close.

Every item is checked on its own (`collector.validation`): a bad one is dropped and counted by
reason, the rest of the frame is kept.

The usual liquidation frame (clean, see `collector.validation.clean_frame`) is decoded into a typed
raw schema in one pass (msgspec); whatever that decoder refuses goes the general way, item by item,
which names the reason of each drop: both ways give the same events, keys and drops
(tests/exchanges/test_parse_fast_venues.py).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    candle_price,
    check_symbol,
    check_texts,
    check_time,
    clean_frame,
    int_field,
    list_field,
    listed_contract,
    parse_object,
    price_text,
    text_field,
    volume,
)
from common import venues
from common.events import LONG, SHORT, Candle, Liquidation, dedup_key_of_texts, new_liquidation
from common.instruments import Instrument, guess_instrument

decode = parse_object  # a frame: one JSON object (collector.validation)
EXCHANGE = "gate"
LIQUIDATIONS = "futures.public_liquidates"
CANDLES = "futures.candlesticks"
PING = "futures.ping"
PONG = "futures.pong"
ALL = "!all"
INTERVAL = "1m"
ALL_LIQUIDATIONS = f"{LIQUIDATIONS}.{ALL}"
MAX_STREAMS = 50  # streams per connection (our choice: the docs state no cap; small shards subscribe in parallel)
PAYLOAD_BATCH = 50  # contracts per liquidation subscribe message
# "each contract can push up to one liquidate order data every 1 second": the registry's flag, one
# place to change when Gate's complete feed (announced from 20260820) is confirmed.
SAMPLED = venues.is_sampled(EXCHANGE)
_ZERO = Decimal(0)


def liquidation_stream(contract: str) -> str:
    return f"{LIQUIDATIONS}.{contract}"


def candle_stream(contract: str) -> str:
    return f"{CANDLES}.{INTERVAL}.{contract}"


def contract_of(stream: str) -> str:
    """`futures.candlesticks.1m.BTC_USDT` -> `BTC_USDT` (contracts never hold a dot)."""
    return stream.rpartition(".")[2]


def number_text(obj: dict[str, Any], key: str) -> str:
    """A number as text: Gate writes some as JSON strings, others as JSON numbers (`"price": 215.1`).
    A float becomes its shortest repr, in plain notation; the amount checks then apply to the text."""
    return _text_of(obj.get(key), key)


# `where`'s item index as text, for the usual frame's few items.
_INDEXED = 64
_INDEXES = tuple(str(i) for i in range(_INDEXED))


def _text_of(value: object, key: str) -> str:
    """`number_text` of a value already read."""
    kind = type(value)
    if kind is str or kind is int:
        return str(value)
    if kind is float:
        text = repr(value)
        return text if "e" not in text and "n" not in text else format(Decimal(text), "f")
    raise Rejected("missing_field" if value is None else "bad_field", key)


def optional_number_text(obj: dict[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else number_text(obj, key)


@dataclass(slots=True)
class GateLiquidation:
    """One item of a futures.public_liquidates update's `result`, with Gate's field names."""

    contract: str  # "BTC_USDT"
    size: str  # signed liquidation order size in contracts: negative = sell (a long liquidated)
    price: str  # "order price": the liquidation order's price
    time_ms: int  # liquidation time, ms
    fill_price: str | None = None  # REST's "average taker price", when the item carries it
    order_size: str | None = None  # REST's signed order size, when the item carries it (then `size` is the position)

    def to_event(
        self,
        received_ms: int,
        source: str,
        max_age_ms: int | None,
        where: str = "",
        instrument_of: Callable[[str, str], Instrument] = guess_instrument,
        known: dict[str, Instrument] | None = None,
    ) -> Liquidation:
        """Normalise (`liquidation_event`; `known`: the adapter's memo, `ExchangeAdapter.contracts`)."""
        signed = self.order_size if self.order_size is not None else self.size
        price = self.fill_price or self.price
        return liquidation_event(
            self.contract,
            signed,
            price,
            self.time_ms,
            received_ms,
            source,
            max_age_ms,
            where,
            instrument_of,
            {} if known is None else known,
        )


def liquidation_event(
    contract: str,
    signed: str,
    price_of: str,
    time_ms: int,
    received_ms: int,
    source: str,
    max_age_ms: int | None,
    where: str,
    instrument_of: Callable[[str, str], Instrument],
    known: dict[str, Instrument],
) -> Liquidation:
    """Normalise one item: the side from the sign of the order size `signed`, contracts x
    quanto_multiplier, the price `price_of` (the fill price when the item has one), the key from the
    canonical texts and `where` (the frame's time_ms and the item's index: "1732400000500#0"). The
    one rule for both ways in (`GateLiquidation.to_event`, the typed fast path)."""
    instrument = known.get(contract)  # checked before: the symbol and its instrument
    symbol = contract if instrument is not None else check_symbol(contract)
    negative = signed[:1] == "-"
    side = LONG if negative else SHORT
    size, contracts = amount_text(signed[1:] if negative else signed)
    canonical_price, price = price_text(price_of)
    time_ms = check_time(time_ms, received_ms, max_age_ms)
    if instrument is None:
        instrument = known[symbol] = listed_contract(instrument_of, EXCHANGE, symbol)
    quantity = contracts * instrument.contract_size
    value = quantity * price  # linear: base quantity x price in USDT (USDC at par)
    if value > MAX_VALUE_USD or value <= _ZERO:
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
        "size<0" if negative else "size>0",  # raw_side: the sign of the order size
        source,  # source
        SAMPLED,  # sampled
        dedup_key_of_texts(EXCHANGE, symbol, time_ms, side, canonical_price, size, where),  # key
    )


@dataclass(slots=True)
class GateCandle:
    """One item of a futures.candlesticks update's `result`, with Gate's field names."""

    t: int  # open time, seconds
    v: str  # volume, contracts
    c: str  # close
    h: str  # high
    l: str  # low  # noqa: E741 (Gate's own name)
    o: str  # open
    n: str  # "<interval>_<contract>": "1m_BTC_USDT"
    w: bool  # the minute is closed (False when Gate leaves it out)

    def to_event(
        self,
        received_ms: int,
        source: str,
        max_age_ms: int | None,
        instrument_of: Callable[[str, str], Instrument] = guess_instrument,
    ) -> Candle:
        interval, _, contract = self.n.partition("_")
        if interval != INTERVAL:
            raise Rejected("unknown_message", f"candle {interval[:10]!r}")
        symbol = check_symbol(contract)
        instrument = listed_contract(instrument_of, EXCHANGE, symbol)
        low, high = candle_price(self.l), candle_price(self.h)
        if low > high:
            raise Rejected("bad_value", "low above high")
        close = candle_price(self.c)
        base = volume(self.v) * instrument.contract_size
        return Candle(  # positional: keywords cost ~0.3 us per event
            EXCHANGE,  # exchange
            symbol,  # symbol
            check_time(self.t * 1000, received_ms, max_age_ms),  # open_ms
            candle_price(self.o),  # open
            high,  # high
            low,  # low
            close,  # close
            base,  # volume: contracts x quanto_multiplier
            base * close,  # quote_volume: an estimate, Gate sends none
            self.w,  # closed
            received_ms,  # received_ms
            source,  # source
        )


def parse_liquidation(item: Any) -> GateLiquidation:
    """Parse one `result` item of a futures.public_liquidates update. Sample frame (the docs')::

    {"channel":"futures.public_liquidates","event":"update","time":1541505434,"time_ms":1541505434123,
     "result":[{"price":215.1,"size":-124,"time_ms":1541486601123,"contract":"BTC_USD"}]}
    """
    if type(item) is not dict:
        raise Rejected("bad_field", "result item")
    return GateLiquidation(
        contract=text_field(item, "contract"),
        size=number_text(item, "size"),
        price=number_text(item, "price"),
        time_ms=int_field(item, "time_ms"),
        fill_price=optional_number_text(item, "fill_price"),
        order_size=optional_number_text(item, "order_size"),
    )


def parse_candle(item: Any) -> GateCandle:
    """Parse one `result` item of a futures.candlesticks update. Sample frame::

    {"time":1732400060,"time_ms":1732400060012,"channel":"futures.candlesticks","event":"update",
     "result":[{"t":1732400000,"v":3882100,"c":"97210.1","h":"97410","l":"97150.2","o":"97300",
                "n":"1m_BTC_USDT","a":"388.21","w":false}]}
    """
    if type(item) is not dict:
        raise Rejected("bad_field", "result item")
    closed = item.get("w")
    if closed is not None and type(closed) is not bool:
        raise Rejected("bad_field", "w")
    return GateCandle(
        t=int_field(item, "t"),
        v=number_text(item, "v"),
        c=text_field(item, "c"),
        h=text_field(item, "h"),
        l=text_field(item, "l"),
        o=text_field(item, "o"),
        n=text_field(item, "n"),
        w=closed is True,
    )


# A number as the typed decoder reads it: Gate writes amounts as strings or JSON numbers.
_Number = str | WireInt | float


class _Item(msgspec.Struct, gc=False):
    """One `result` item of a futures.public_liquidates update, as far as `parse_liquidation` reads it."""

    contract: str
    size: _Number
    price: _Number
    time_ms: WireInt
    fill_price: _Number | None = None
    order_size: _Number | None = None


class _Frame(msgspec.Struct, gc=False):
    """An update frame as far as the fast path reads it."""

    channel: str  # "futures.public_liquidates"
    event: str  # "update"
    result: list[_Item]
    time_ms: WireInt | None = None  # push time, ms


# The usual liquidation update decoded and type-checked in one pass, no dicts for the fields nobody
# reads. Whatever it refuses (a wrong type or a missing field in any item, bad JSON, a candle update)
# goes the general way, item by item, which names the reason of each drop; it accepts nothing the
# general way would refuse before `liquidation_event()`.
_decode_frame = msgspec.json.Decoder(_Frame).decode


class GateAdapter(ExchangeAdapter):
    """Gate USDT perpetual public streams: `!all` liquidations on a shard of their own, candles sharded."""

    name: ClassVar[str] = EXCHANGE
    ping_interval_s: ClassVar[float | None] = 15.0
    messages_per_s: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ids = itertools.count(1)
        super().__init__(*args, **kwargs)

    def fixed_streams(self) -> list[Shard]:
        if not self.whole_market:
            return []
        return [Shard(f"{EXCHANGE}-liquidations", [ALL_LIQUIDATIONS], idle_ok=True, fixed=True)]

    def streams_of(self, symbol: str, candles: bool) -> list[str]:
        streams = [] if self.whole_market else [liquidation_stream(symbol)]
        return [*streams, candle_stream(symbol)] if candles else streams

    def shard_fits(self, shard: Shard, streams: list[str]) -> bool:
        return len(shard.wanted) + len(streams) <= MAX_STREAMS

    def may_idle(self, shard: Shard) -> bool:
        return shard.idle_ok or not any(s.startswith(CANDLES) for s in shard.wanted)

    def subscribe(self, shard: Shard) -> bool:
        self.request(shard, True, [s for s in shard.wanted if s not in self.refused])
        return not shard.pending

    def request(self, shard: Shard, subscribe: bool, streams: list[str]) -> None:
        """Liquidations: one message per `PAYLOAD_BATCH` contracts; candles: one message each."""
        liquidations = [s for s in streams if s.startswith(f"{LIQUIDATIONS}.")]
        candles = [s for s in streams if s.startswith(f"{CANDLES}.")]
        for start in range(0, len(liquidations), PAYLOAD_BATCH):
            batch = liquidations[start : start + PAYLOAD_BATCH]
            self._send(shard, subscribe, LIQUIDATIONS, [contract_of(s) for s in batch], batch)
        for stream in candles:
            self._send(shard, subscribe, CANDLES, [INTERVAL, contract_of(stream)], [stream])

    def _send(self, shard: Shard, subscribe: bool, channel: str, payload: list[str], streams: list[str]) -> None:
        req_id = next(self._ids)
        shard.pending[str(req_id)] = (subscribe, streams)
        event = "subscribe" if subscribe else "unsubscribe"
        message = {"time": int(time.time()), "id": req_id, "channel": channel, "event": event, "payload": payload}
        shard.send(json.dumps(message, ensure_ascii=False))

    def ping_message(self) -> str:
        return json.dumps({"time": int(time.time()), "channel": PING})

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """The dispatcher: by channel and event; bad input is counted, never raised.

        The usual liquidation update (a clean one, see `clean_frame`, so no text field needs
        `check_texts`) is decoded into the raw schema in one pass; anything the typed decoder refuses,
        and every other message, is parsed the general way, which names the reason of a drop.
        """
        if clean_frame(raw):
            events = self._fast(raw, received_ms)
            if events is not None:
                return events
        try:
            msg = decode(raw)
            channel, event = msg.get("channel"), msg.get("event")
            if channel == PONG:
                return []
            if event in ("subscribe", "unsubscribe"):
                self._on_reply(msg)
                return []
            if event == "update" and channel == LIQUIDATIONS:
                return self._on_liquidations(msg, raw, received_ms)
            if event == "update" and channel == CANDLES:
                return self._on_candles(msg, raw, received_ms)
            raise Rejected("unknown_message", f"{str(channel)[:40]} {str(event)[:20]}")
        except Rejected as exc:
            self._drop(exc, raw)
        return []

    def _fast(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle] | None:
        """The events of a clean liquidation update the typed decoder accepts; None: parse it the
        general way. Each item still costs only itself."""
        try:
            frame = _decode_frame(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        if frame.event != "update" or frame.channel != LIQUIDATIONS:
            return None
        events: list[Liquidation | Candle] = []
        prefix = "#" if frame.time_ms is None else f"{frame.time_ms}#"  # of `where`: "1732400000500#0"
        source, max_age_ms, instrument_of, known = self.source, self.max_age_ms, self.instrument_of, self.contracts
        for index, item in enumerate(frame.result):
            try:
                signed = item.order_size if item.order_size is not None else item.size
                fill = item.fill_price  # as `fill_price or price` of their texts: only "" is no text
                price = item.price if fill is None or fill == "" else fill
                # Gate writes sizes as JSON integers: `str()` is what `_text_of` gives them, without its call.
                size = (
                    signed if type(signed) is str else str(signed) if type(signed) is int else _text_of(signed, "size")
                )
                events.append(
                    liquidation_event(
                        item.contract,
                        size,
                        price if type(price) is str else _text_of(price, "price"),
                        item.time_ms,
                        received_ms,
                        source,
                        max_age_ms,
                        prefix + _INDEXES[index] if index < _INDEXED else f"{prefix}{index}",
                        instrument_of,
                        known,
                    )
                )
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_liquidations(self, msg: dict[str, Any], raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        pushed = msg.get("time_ms")
        frame_time = str(pushed) if type(pushed) is int else ""
        for index, item in enumerate(list_field(msg, "result")):
            try:
                liquidation = parse_liquidation(item)
                if not clean:
                    check_texts(item, skip="contract")
                where = f"{frame_time}#{index}"
                events.append(
                    liquidation.to_event(
                        received_ms, self.source, self.max_age_ms, where, self.instrument_of, self.contracts
                    )
                )
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_candles(self, msg: dict[str, Any], raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        for item in list_field(msg, "result"):
            try:
                candle = parse_candle(item)
                if not clean:
                    check_texts(item, skip="n")
                events.append(candle.to_event(received_ms, self.source, self.max_age_ms, self.instrument_of))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_reply(self, msg: dict[str, Any]) -> None:
        """The answer to a (un)subscribe request. Sample refusal::

        {"time":1732400000,"time_ms":1732400000123,"id":3,"channel":"futures.public_liquidates",
         "event":"subscribe","error":{"code":2,"message":"unknown contract NOPE_USDT"},"result":null}

        The streams of the contracts the message names are refused, the rest is sent again; a
        refusal naming none is narrowed down by `_answered`. Never costs the connection.
        """
        shard = self.current
        if shard is None:
            return
        req_id = self._request_id(shard, msg)
        if req_id is None:
            return
        error = msg.get("error")
        if error is None:
            self._answered(shard, req_id, True)
            return
        text = error.get("message") if isinstance(error, dict) else error
        reason = one_line(str(text), 200) or "refused"
        subscribe, streams = shard.pending[req_id]
        words = set(reason.replace(",", " ").replace("[", " ").replace("]", " ").split())
        named = [s for s in streams if contract_of(s) in words]
        if not subscribe or not named:
            self._answered(shard, req_id, False, reason)
            return
        del shard.pending[req_id]
        for stream in named:
            self.refuse(stream, reason)
        rest = [s for s in streams if s not in named and s in shard.wanted]
        if rest:
            self.request(shard, True, rest)

    @staticmethod
    def _request_id(shard: Shard, msg: dict[str, Any]) -> str | None:
        """The pending request this answers: by the echoed `id`, else the oldest of its channel."""
        req_id = msg.get("id")
        if req_id is not None and str(req_id) in shard.pending:
            return str(req_id)
        channel, subscribe = msg.get("channel"), msg.get("event") == "subscribe"
        for key, (sub, streams) in shard.pending.items():
            if sub == subscribe and streams and streams[0].startswith(f"{channel}."):
                return key
        return None
