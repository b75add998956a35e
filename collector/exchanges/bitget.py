"""Bitget UTA (v3 public WebSocket): liquidations (topic `liquidation`) and 1-minute candles (topic `kline`).

Liquidations. The `liquidation` topic has no `symbol` argument: one subscription per product type
(`{"instType":"usdt-futures","topic":"liquidation"}`, and `usdc-futures`) carries every pair of that
type. They live on one fixed shard of their own (like Binance's `!forceOrder@arr`), in the whole
market and with an explicit list alike; with an explicit list (LIQ_SYMBOLS=BTCUSDT,...) the items of
other pairs are dropped quietly but counted (health drop reason `not_followed`). Bitget UTA
"Liquidation Channel": "Data is pushed once per second (1s/interval). Each push contains the
aggregated liquidation data for the previous second: only the record with the highest liquidation
quantity for long and short positions respectively per trading pair is included ... For any given
trading pair within a single second, at most 2 records are delivered (1 for long, 1 for short)."
Every row is therefore `sampled=True` (a lower bound, most of all in cascades).

Sides (the same page, push parameters): "side | Position side: `buy` Long position liquidation,
`sell` Short position liquidation". So `buy` = a LONG was liquidated, `sell` = a SHORT: the position
side, like Bybit's `S` and the opposite of Binance's order side. Tardis' Bitget v3 mapper reads it the
same way ("Bitget side is position side").

Size (the same page): "amount | Liquidation amount. Unit: quote coin." `amount` is the value in
the pair's quote coin (USDT for `usdt-futures`, USDC for `usdc-futures`), not a base quantity and not
contracts: `value_usd` is `amount` itself (USDC at par) and the base `quantity` is `amount / price`
(28 significant digits), `price` being the docs' "Liquidation price". The rule lives in one place,
`BitgetLiquidation.to_event()`. Since nothing is counted in contracts, an instrument the list has not
named yet is fine (the quote comes from the product type). The docs' own sample (`"price": "89000",
"amount": "37.722858"`) reuses numbers of another page's example and proves nothing either way.

Candles: one `{"instType":...,"topic":"kline","symbol":"BTCUSDT","interval":"1m"}` per pair; the docs
say `volume` "The unit is base coin", `turnover` "The unit is quote coin", and a candle item has no
"closed" flag: a candle counts as closed when the frame's push time `ts` is at or after the end of its
minute (the last push of a minute, or a snapshot of past minutes; on live streams a snapshot's
candles older than LIQ_MAX_EVENT_AGE_S are dropped as `stale_time` like any old event). A refused
liquidation topic is not sent again before a restart (no symbol's listing names it).

Streams are strings: `liquidation.usdt-futures`, `kline.usdt-futures.BTCUSDT`; `request()` builds the
JSON args from them. Bitget answers each arg on its own (`{"event":"subscribe","arg":{...}}`, or
`{"event":"error","arg":{...},"code":...,"msg":...}`), so each stream is its own pending request and a
refusal costs the one topic it names, never the connection. Bitget's "Websocket API" page (common
to its APIs) allows "Max 1000 channel subscription/connection", "240 subscription requests/Hour/
connection", "up to 10 messages per second" (pings included) and says "Websocket will be forcibly
disconnected every 24 hours": candle shards hold at most `MAX_STREAMS` topics, args go in messages of
at most `ARGS_BYTES` bytes (a margin under the 4 KB per-message cap we could not confirm for v3), at
most 5 messages a second, and each connection is rotated make-before-break at 23 h 50 m. Bitget wants
the text `ping` at least every 30 s (we send it every 20 s) and answers the text `pong`, which only
feeds the silence watchdog.

Dedup: Bitget sends no id; the key is the pair, `ts`, side, price and amount as written (at most one
record per side per pair per second), so a re-sent item dedups and two distinct items stay two.
Every item of a frame is checked on its own (`collector.validation`); a bad item is dropped and
counted by reason, the rest of the frame is kept.

The usual liquidation frame (clean, see `collector.validation.clean_frame`) is decoded into a typed
raw schema in one pass (msgspec); whatever that decoder refuses goes the general way, item by item,
which names the reason of each drop: both ways give the same events, keys and drops
(tests/exchanges/test_parse_fast_venues.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from collector.exchanges.connection import ExchangeAdapter, Shard
from collector.health import one_line
from collector.validation import (
    MAX_VALUE_USD,
    Rejected,
    amount_text,
    candle_price,
    check_ms_text,
    check_symbol,
    check_texts,
    clean_frame,
    list_field,
    parse_object,
    price_text,
    text_field,
    volume,
)
from common.events import Candle, Liquidation, Side, dedup_key_of_texts, new_liquidation
from common.instruments import Instrument, guess_instrument

decode = parse_object  # a frame: one JSON object (collector.validation)
EXCHANGE = "bitget"
LIQUIDATIONS = "liquidation"
CANDLES = "kline"
INTERVAL = "1m"
MINUTE_MS = 60_000
USDT_FUTURES = "usdt-futures"
USDC_FUTURES = "usdc-futures"
MAX_STREAMS = 50  # candle topics per connection (Bitget allows 1000)
ARGS_BYTES = 3800  # JSON bytes of `args` per subscribe message, below the 4096 cap

# The product type a frame's `arg` names -> the quote coin its amounts are written in.
QUOTE_OF_INST_TYPE = {USDT_FUTURES: "USDT", USDC_FUTURES: "USDC"}
INST_TYPE_OF_QUOTE = {quote: inst_type for inst_type, quote in QUOTE_OF_INST_TYPE.items()}
# "Position side: buy Long position liquidation, sell Short position liquidation".
_SIDES = {"buy": Side.LONG, "sell": Side.SHORT}
ALL_LIQUIDATIONS = [f"{LIQUIDATIONS}.{USDT_FUTURES}", f"{LIQUIDATIONS}.{USDC_FUTURES}"]


def liquidation_stream(inst_type: str) -> str:
    return f"{LIQUIDATIONS}.{inst_type}"


def candle_stream(inst_type: str, symbol: str) -> str:
    return f"{CANDLES}.{inst_type}.{symbol}"


def arg_of(stream: str) -> dict[str, str]:
    """The subscription arg a stream string stands for."""
    topic, _, rest = stream.partition(".")
    if topic == CANDLES:
        inst_type, _, symbol = rest.partition(".")
        return {"instType": inst_type, "topic": CANDLES, "symbol": symbol, "interval": INTERVAL}
    return {"instType": rest, "topic": topic}


def stream_of(arg: Any) -> str | None:
    """The stream string of an `arg` object as Bitget echoes it (None when it is not one of ours)."""
    if type(arg) is not dict:
        return None
    inst_type, topic = arg.get("instType"), arg.get("topic")
    if type(inst_type) is not str or type(topic) is not str:
        return None
    if topic == LIQUIDATIONS:
        return liquidation_stream(inst_type)
    symbol = arg.get("symbol")
    if topic == CANDLES and type(symbol) is str and arg.get("interval", INTERVAL) == INTERVAL:
        return candle_stream(inst_type, symbol)
    return None


@dataclass(slots=True)
class BitgetLiquidation:
    """One item of a liquidation push's `data` (plus the push's product type), with Bitget's field names."""

    instType: str  # from the push's `arg`: "usdt-futures" | "usdc-futures"
    symbol: str  # "BTCUSDT"
    side: str  # position side: "buy" = long liquidated, "sell" = short liquidated
    price: str  # "Liquidation price"
    amount: str  # "Liquidation amount. Unit: quote coin." (USDT or USDC), not a base quantity
    ts: str  # liquidation time, ms, written as a string

    def to_event(
        self,
        received_ms: int,
        source: str,
        max_age_ms: int | None,
        instrument_of: Callable[[str, str], Instrument] = guess_instrument,
    ) -> Liquidation:
        """Normalise (`liquidation_event`)."""
        return liquidation_event(
            self.instType,
            self.symbol,
            self.side,
            self.price,
            self.amount,
            self.ts,
            received_ms,
            source,
            max_age_ms,
            instrument_of,
        )


def liquidation_event(
    inst_type: str,
    symbol_text: str,
    position_side: str,
    price_of: str,
    amount: str,
    ts: str,
    received_ms: int,
    source: str,
    max_age_ms: int | None,
    instrument_of: Callable[[str, str], Instrument],
) -> Liquidation:
    """Normalise one item. THE unit rule: `amount` is quote coin, so value_usd = amount (USDC at par)
    and quantity = amount / price in the venue's base units (a multiplier coin's price and quantity
    stay per its venue unit, as on Binance). The key takes price and amount as written. The one rule
    for both ways in (`BitgetLiquidation.to_event`, the typed fast path)."""
    side = _SIDES.get(position_side)
    if side is None:
        raise Rejected("bad_value", f"side {position_side[:20]!r}")
    symbol = check_symbol(symbol_text)
    canonical_price, price = price_text(price_of)
    value_text, value = amount_text(amount)
    time_ms = check_ms_text(ts, "ts", received_ms, max_age_ms)
    quote = QUOTE_OF_INST_TYPE.get(inst_type) or instrument_of(EXCHANGE, symbol).quote
    if quote not in INST_TYPE_OF_QUOTE:
        raise Rejected("bad_value", f"no USD quote in {symbol}")
    if value > MAX_VALUE_USD:  # never zero or below: `amount_text` takes only positive amounts
        raise Rejected("bad_value", f"value {value}")
    return new_liquidation(  # `Liquidation(...)` with its key; positional: keywords cost ~0.3 us
        EXCHANGE,  # exchange
        symbol,  # symbol
        side,  # side
        value / price,  # quantity: base units
        price,  # price
        value,  # value_usd: the venue's own quote amount
        time_ms,  # time_ms
        received_ms,  # received_ms
        position_side,  # raw_side
        source,  # source
        True,  # sampled: the largest long and short per pair per second
        dedup_key_of_texts(EXCHANGE, symbol, time_ms, side, canonical_price, value_text, "quote"),  # key
    )


@dataclass(slots=True)
class BitgetCandle:
    """One item of a kline push's `data` (symbol from the push's `arg`), with Bitget's field names."""

    symbol: str  # from `arg.symbol`
    start: str  # open time, ms, written as a string: the candle's key
    open: str
    high: str
    low: str
    close: str
    volume: str  # "The unit is base coin"
    turnover: str  # "The unit is quote coin"
    ts: int  # the push's own `ts` (ms): a push at or after the minute's end carries its final values

    def to_event(self, received_ms: int, source: str, max_age_ms: int | None) -> Candle:
        symbol = check_symbol(self.symbol)
        low, high = candle_price(self.low), candle_price(self.high)
        if low > high:
            raise Rejected("bad_value", "low above high")
        open_ms = check_ms_text(self.start, "start", received_ms, max_age_ms)
        return Candle(  # positional: keywords cost ~0.3 us per event
            EXCHANGE,  # exchange
            symbol,  # symbol
            open_ms,  # open_ms
            candle_price(self.open),  # open
            high,  # high
            low,  # low
            candle_price(self.close),  # close
            volume(self.volume),  # volume
            volume(self.turnover),  # quote_volume
            self.ts >= open_ms + MINUTE_MS,  # closed
            received_ms,  # received_ms
            source,  # source
        )


def parse_liquidation(item: Any, inst_type: str) -> BitgetLiquidation:
    """Parse one `data` item of a liquidation push. Sample frame (Bitget UTA "Liquidation Channel")::

    {"data":[{"symbol":"BTCUSDT","side":"buy","price":"89000","amount":"37.722858","ts":"1736371332162"}],
     "arg":{"instType":"usdt-futures","topic":"liquidation"},"action":"update","ts":1736371332162}
    """
    if type(item) is not dict:
        raise Rejected("bad_field", "data item")
    get = item.get
    symbol, side, price, amount, ts = get("symbol"), get("side"), get("price"), get("amount"), get("ts")
    if type(symbol) is str and type(side) is str and type(price) is str and type(amount) is str and type(ts) is str:
        return BitgetLiquidation(inst_type, symbol, side, price, amount, ts)
    # Slow path, only for bad input: name the first field that is wrong.
    return BitgetLiquidation(
        instType=inst_type,
        symbol=text_field(item, "symbol"),
        side=text_field(item, "side"),
        price=text_field(item, "price"),
        amount=text_field(item, "amount"),
        ts=text_field(item, "ts"),
    )


def parse_candle(item: Any, symbol: str, pushed_ms: int) -> BitgetCandle:
    """Parse one `data` item of a kline push. Sample frame (Bitget UTA "Candlestick Channel")::

    {"data":[{"volume":"0.423","high":"400005","low":"276670","start":"1710518400000","close":"400005",
              "turnover":"148190.38375","open":"276670"}],
     "arg":{"instType":"usdt-futures","symbol":"BTCUSDT","topic":"kline","interval":"1m"},
     "action":"snapshot","ts":1736370735556}
    """
    if type(item) is not dict:
        raise Rejected("bad_field", "data item")
    get = item.get
    start, o, h, low, c = get("start"), get("open"), get("high"), get("low"), get("close")
    v, turnover = get("volume"), get("turnover")
    if (
        type(start) is str
        and type(o) is str
        and type(h) is str
        and type(low) is str
        and type(c) is str
        and type(v) is str
        and type(turnover) is str
    ):
        return BitgetCandle(symbol, start, o, h, low, c, v, turnover, pushed_ms)
    # Slow path, only for bad input: name the first field that is wrong.
    return BitgetCandle(
        symbol=symbol,
        start=text_field(item, "start"),
        open=text_field(item, "open"),
        high=text_field(item, "high"),
        low=text_field(item, "low"),
        close=text_field(item, "close"),
        volume=text_field(item, "volume"),
        turnover=text_field(item, "turnover"),
        ts=pushed_ms,
    )


class _Item(msgspec.Struct, gc=False):
    """One `data` item of a liquidation push, as far as `parse_liquidation` reads it."""

    symbol: str
    side: str
    price: str
    amount: str
    ts: str


class _Arg(msgspec.Struct, gc=False):
    topic: str  # "liquidation"
    instType: str  # "usdt-futures" | "usdc-futures"


class _Frame(msgspec.Struct, gc=False):
    """A liquidation push as far as the fast path reads it."""

    arg: _Arg
    data: list[_Item]
    event: msgspec.Raw = msgspec.Raw()  # present on answers only: left to the general way


# The usual liquidation push decoded and type-checked in one pass, no dicts for the fields nobody
# reads. Whatever it refuses (a wrong type or a missing field in any item, bad JSON, a candle push)
# goes the general way, item by item, which names the reason of each drop; it accepts nothing the
# general way would refuse before `liquidation_event()`.
_decode_frame = msgspec.json.Decoder(_Frame).decode


class BitgetAdapter(ExchangeAdapter):
    """Bitget UTA public streams: one fixed liquidation shard, candles spread over small shards."""

    name: ClassVar[str] = EXCHANGE
    # Bitget asks for a `ping` at least every 30 s; every 20 s keeps a `pong` inside the default
    # 30 s silence timeout on a quiet candle shard (klines of idle pairs come once a minute).
    ping_interval_s: ClassVar[float | None] = 20.0
    max_lifetime_s: ClassVar[float | None] = 23 * 3600 + 50 * 60
    make_before_break: ClassVar[bool] = True
    messages_per_s: ClassVar[float] = 5.0  # Bitget takes 10 a second, pings included

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._followed_of: tuple[str, ...] | None = None
        self._followed_set: frozenset[str] = frozenset()
        super().__init__(*args, **kwargs)

    def _followed(self) -> frozenset[str]:
        """The explicit list as a set, rebuilt when `add_symbols()`/`remove_symbols()` replaced it."""
        if self._followed_of is not self.symbols:
            self._followed_of, self._followed_set = self.symbols, frozenset(self.symbols)
        return self._followed_set

    def fixed_streams(self) -> list[Shard]:
        # No per-symbol liquidation topic exists: the all-pairs ones, whatever LIQ_SYMBOLS says.
        return [Shard(f"{EXCHANGE}-liquidations", ALL_LIQUIDATIONS, idle_ok=True, fixed=True)]

    def streams_of(self, symbol: str, candles: bool) -> list[str]:
        if not candles:
            return []
        quote = self.instrument_of(EXCHANGE, symbol).quote
        return [candle_stream(INST_TYPE_OF_QUOTE.get(quote, USDT_FUTURES), symbol)]

    def shard_fits(self, shard: Shard, streams: list[str]) -> bool:
        return len(shard.wanted) + len(streams) <= MAX_STREAMS

    def subscribe(self, shard: Shard) -> bool:
        """Send every wanted topic; confirmed later, when each one is answered."""
        self.request(shard, True, [s for s in shard.wanted if s not in self.refused])
        return not shard.pending

    def request(self, shard: Shard, subscribe: bool, streams: list[str]) -> None:
        """One message per `ARGS_BYTES` of args; each stream awaits its own answer (`op:stream`)."""
        op = "subscribe" if subscribe else "unsubscribe"
        batch: list[dict[str, str]] = []
        used = 0
        for stream in streams:
            arg = arg_of(stream)
            size = len(json.dumps(arg, ensure_ascii=False)) + 1
            if batch and used + size > ARGS_BYTES:
                shard.send(json.dumps({"op": op, "args": batch}, ensure_ascii=False))
                batch, used = [], 0
            shard.pending[f"{op}:{stream}"] = (subscribe, [stream])
            batch.append(arg)
            used += size
        if batch:
            shard.send(json.dumps({"op": op, "args": batch}, ensure_ascii=False))

    def ping_message(self) -> str:
        return "ping"

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """The dispatcher: `pong`, answers (`event`), then data by `arg.topic`; bad input is counted,
        never raised."""
        if raw == "pong" or raw == b"pong":
            return []  # the answer to our text ping: it only proves the line is alive
        if clean_frame(raw):
            events = self._fast(raw, received_ms)
            if events is not None:
                return events
        try:
            msg = decode(raw)
            if "event" in msg:
                self._on_event(msg)
                return []
            arg = msg.get("arg")
            if type(arg) is not dict:
                raise Rejected("unknown_message", "no arg")
            topic = arg.get("topic")
            if topic == LIQUIDATIONS:
                return self._on_liquidations(msg, arg, raw, received_ms)
            if topic == CANDLES:
                return self._on_candles(msg, arg, raw, received_ms)
            raise Rejected("unknown_message", str(topic)[:40])
        except Rejected as exc:
            self._drop(exc, raw)
        return []

    def _fast(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle] | None:
        """The events of a clean liquidation push the typed decoder accepts (a clean frame needs no
        `check_texts`); None: parse it the general way. Each item still costs only itself."""
        try:
            frame = _decode_frame(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        inst_type = frame.arg.instType
        if frame.event or frame.arg.topic != LIQUIDATIONS or inst_type not in QUOTE_OF_INST_TYPE:
            return None
        followed = None if self.whole_market else self._followed()
        events: list[Liquidation | Candle] = []
        source, max_age_ms, instrument_of = self.source, self.max_age_ms, self.instrument_of
        for item in frame.data:
            try:
                if followed is not None and item.symbol not in followed:
                    raise Rejected("not_followed", item.symbol[:40])
                events.append(
                    liquidation_event(
                        inst_type,
                        item.symbol,
                        item.side,
                        item.price,
                        item.amount,
                        item.ts,
                        received_ms,
                        source,
                        max_age_ms,
                        instrument_of,
                    )
                )
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_liquidations(
        self, msg: dict[str, Any], arg: dict[str, Any], raw: str | bytes, received_ms: int
    ) -> list[Liquidation | Candle]:
        inst_type = arg.get("instType")
        if type(inst_type) is not str or inst_type not in QUOTE_OF_INST_TYPE:
            raise Rejected("unknown_message", f"liquidation {str(inst_type)[:20]}")
        followed = None if self.whole_market else self._followed()
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        for item in list_field(msg, "data"):
            try:
                liquidation = parse_liquidation(item, inst_type)
                if followed is not None and liquidation.symbol not in followed:
                    raise Rejected("not_followed", liquidation.symbol[:40])
                if not clean:
                    check_texts(item, skip="symbol")
                events.append(liquidation.to_event(received_ms, self.source, self.max_age_ms, self.instrument_of))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_candles(
        self, msg: dict[str, Any], arg: dict[str, Any], raw: str | bytes, received_ms: int
    ) -> list[Liquidation | Candle]:
        symbol, interval, ts = arg.get("symbol"), arg.get("interval"), msg.get("ts")
        if interval != INTERVAL:
            raise Rejected("unknown_message", f"kline {str(interval)[:10]!r}")
        if type(symbol) is not str:
            raise Rejected("missing_field" if symbol is None else "bad_field", "arg.symbol")
        if type(ts) is not int:
            raise Rejected("missing_field" if ts is None else "bad_field", "ts")
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        for item in list_field(msg, "data"):
            try:
                candle = parse_candle(item, symbol, ts)
                if not clean:
                    check_texts(item)
                events.append(candle.to_event(received_ms, self.source, self.max_age_ms))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_event(self, msg: dict[str, Any]) -> None:
        """Answers to our requests, one per arg. Sample acknowledgement and refusal::

        {"event":"subscribe","arg":{"instType":"usdt-futures","topic":"liquidation"},"connId":"..."}
        {"event":"error","arg":{"instType":"usdt-futures","topic":"kline","symbol":"NOPEUSDT","interval":"1m"},
         "code":"30001","msg":"instType:usdt-futures,topic:kline,symbol:NOPEUSDT doesn't exist","connId":"..."}

        A refusal costs the topic it names, never the connection. One without an `arg` is matched to
        the pending topic whose symbol (or product type) its message names, else only counted.
        """
        event = msg.get("event")
        shard = self.current
        if event in ("subscribe", "unsubscribe"):
            stream = stream_of(msg.get("arg"))
            if shard is not None and stream is not None:
                self._answered(shard, f"{event}:{stream}", True)
            return
        if event != "error":
            raise Rejected("unknown_message", f"event {str(event)[:20]}")
        reason = one_line(f"{msg.get('code', '')} {msg.get('msg', '')}".strip(), 200) or "refused"
        if shard is None:
            return
        stream = stream_of(msg.get("arg"))
        keys = [f"{op}:{stream}" for op in ("subscribe", "unsubscribe")] if stream is not None else []
        key = next((k for k in keys if k in shard.pending), None)
        if key is None and stream is None:
            words = {w for w in reason.replace(",", " ").replace(":", " ").split() if w}
            key = next((k for k in shard.pending if k.rpartition(".")[2] in words), None)
        if key is None:
            raise Rejected("venue_error", reason)
        self._answered(shard, key, False, reason)
