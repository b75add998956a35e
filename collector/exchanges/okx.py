"""OKX v5: liquidations (`liquidation-orders`, SWAP and FUTURES) and 1-minute candles (`candle1m`).

Endpoints. Liquidations live on the public endpoint (`/ws/v5/public`, the configured URL), candles
on the business endpoint (`/ws/v5/business`, derived from it by replacing the trailing `/public`):
OKX moved the candle channels there, and the public endpoint refuses them. So the one
liquidation subscription has a connection of its own (`fixed_streams()`), and candles are spread
over connections of at most `MAX_STREAMS` streams on the business endpoint (`connect_url()`).

Streams are plain strings, `<channel>:<instType or instId>`: "liquidation-orders:SWAP",
"liquidation-orders:FUTURES", "candle1m:BTC-USDT-SWAP"; `request()` turns each into the arg object
OKX wants (`{"channel":"liquidation-orders","instType":"SWAP"}`, `{"channel":"candle1m","instId":...}`)
and sends at most `SUBSCRIBE_BATCH` of them per `{"op":"subscribe","args":[...]}`. OKX answers each arg
on its own (`{"event":"subscribe","arg":{...},"connId":"..."}`), so every stream is a pending request
of its own. A refusal is an error event: `{"event":"error","code":"60018","msg":"Wrong URL or
channel:candle1m,instId:NOPE-USDT-SWAP doesn't exist. ...","connId":"..."}` names the stream, which is
refused alone (remembered, shown in the health, the connection and every other stream carry on);
so is every pending stream an invalid request quotes back (60012 "Invalid request: {...}"). An error
that names none of them while subscriptions are pending (60014 "Requests too frequent") ends the
session, and the reconnect (with backoff) subscribes again.

Whole market or not: OKX has no per-symbol liquidation channel ("Instrument type `SWAP` `FUTURES`
`MARGIN` `OPTION`" is the only argument), so the one all-contracts subscription is used in both
modes. With an explicit LIQ_SYMBOLS list, liquidations of other contracts are dropped quietly but
counted (health drop reason `not_followed`, no log line).

Keepalive (OKX docs, Connect): "The connection will break automatically if the subscription is not
established or data has not been pushed for more than 30 seconds." ... "If the timer is triggered,
which means that no new message is received within N seconds, send the String 'ping'. Expect a
'pong' as a response." We send the text `ping` every `ping_interval_s` (25 s); the text `pong`
(not JSON) is an answer that feeds the silence watchdog, not data.

Liquidations (OKX docs, Liquidation orders channel): "For futures and swaps, each contract will only
show a maximum of one order per one-second period. This data doesn't represent the total number of
liquidations on OKX." So every row is `sampled=True` (a lower bound, like Binance). The first
message after subscribing repeats recent liquidations; the dedup key (instId, the detail's `ts`,
side, `bkPx`, base quantity: no index, no push time) makes a repeat store once.

Sides: `details[].side` is the liquidation ORDER side, "Order side, `buy` `sell`": `buy` closes a
short (SHORT liquidated), `sell` closes a long (LONG). `posSide` is the "Position mode side: `long`:
Hedge mode long, `short`: Hedge mode short, `net`: Net mode": it reads `net` for net-mode accounts
and never decides the side (kept in the raw schema only).

Units: "`sz` Quantity of liquidation ... For `FUTURES/SWAP`, the unit is contract." The base
quantity is `sz * ctVal`, the contract value from the instrument list (`Instrument.contract_size`,
`collector.instruments.okx`); a contract no list has named (a guessed instrument: `listed=False`, or
sizes not in contracts) cannot be converted and is dropped as `unknown_instrument`, like an inverse
contract (`BTC-USD-SWAP`), which the list does not follow. Price: `bkPx`, "Bankruptcy price. The
price of the transaction with the system's liquidation account". USD value = base quantity x
`bkPx` (USDT, or USDC at par).

Candles (OKX docs, candlesticks): `[ts,o,h,l,c,vol,volCcy,volCcyQuote,confirm]`, "vol: Trading
volume, with a unit of contract. If it is a derivatives contract, the value is the number of
contracts." / "volCcy: ... If it is a derivatives contract, the value is the number of base
currency." / "volCcyQuote: Trading volume, the value is the quantity in quote currency e.g. The
unit is USDT for BTC-USDT and BTC-USDT-SWAP" / "confirm: `0`: K line is uncompleted `1`: K line is
completed". So `Candle.volume` is `volCcy` (base), `quote_volume` is `volCcyQuote`.

Every item is checked on its own (`collector.validation`): a bad detail is dropped and counted by
reason, the rest of the frame is kept.

The usual liquidation frame (clean, see `collector.validation.clean_frame`) is decoded into a typed
raw schema in one pass (msgspec); whatever that decoder refuses goes the general way, item by item,
which names the reason of each drop: both ways give the same events, keys and drops
(tests/exchanges/test_parse_fast_venues.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

from collector.exchanges.connection import ExchangeAdapter, SessionEnded, Shard
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
    listed_contract,
    parse_object,
    price_text,
    text_field,
    volume,
)
from common.events import Candle, Liquidation, Side, canonical_text, dedup_key_of_texts, new_liquidation
from common.instruments import Instrument, guess_instrument

decode = parse_object  # a frame: one JSON object (collector.validation)
EXCHANGE = "okx"
LIQUIDATIONS = "liquidation-orders"
CANDLES = "candle1m"
INST_TYPES = ("SWAP", "FUTURES")
ALL_LIQUIDATIONS = [f"{LIQUIDATIONS}:{t}" for t in INST_TYPES]
PUBLIC_PATH = "/public"
BUSINESS_PATH = "/business"
MAX_STREAMS = 200  # candle streams per business connection
SUBSCRIBE_BATCH = 50  # args per subscribe request (OKX allows 64 KB of args; 480 requests an hour)
PING = "ping"
PONG = "pong"
_ZERO = Decimal(0)
_NOT_FOLLOWED = "not_followed"
# The order side tells which position was closed.
_SIDES = {"sell": Side.LONG, "buy": Side.SHORT}
_CONFIRM = {"0": False, "1": True}
# "Wrong URL or channel:candle1m,instId:NOPE-USDT-SWAP doesn't exist": the stream an error names.
_NAMED = re.compile(
    r"channel\W{0,3}:\W{0,3}([A-Za-z0-9-]+)\W{0,3},\W{0,3}(?:instId|instType)\W{0,3}:\W{0,3}([A-Za-z0-9_.-]+)"
)


def stream_arg(stream: str) -> dict[str, str]:
    """The subscribe arg of a stream: "candle1m:BTC-USDT-SWAP" -> {"channel": "candle1m", "instId": ...}."""
    channel, _, value = stream.partition(":")
    return {"channel": channel, "instType" if channel == LIQUIDATIONS else "instId": value}


def stream_of(arg: Any) -> str | None:
    """The stream an ack's `arg` names, or None when it is not an arg object."""
    if type(arg) is not dict:
        return None
    channel = arg.get("channel")
    value = arg.get("instType") if channel == LIQUIDATIONS else arg.get("instId")
    if type(channel) is not str or type(value) is not str:
        return None
    return f"{channel}:{value}"


def business_url(public_url: str) -> str:
    """`wss://ws.okx.com:8443/ws/v5/public` -> `.../ws/v5/business` (a URL not ending in /public is kept)."""
    parts = urlsplit(public_url)
    path = parts.path.rstrip("/")
    if not path.endswith(PUBLIC_PATH):
        return public_url
    return urlunsplit(parts._replace(path=path[: -len(PUBLIC_PATH)] + BUSINESS_PATH))


@dataclass(slots=True)
class OkxLiquidation:
    """One `details[]` item of a liquidation-orders push, with OKX's field names and its item's instId."""

    instId: str  # from the data item: "BTC-USDT-SWAP", "BTC-USDT-251226"
    side: str  # order side: "buy" closes a short (SHORT liquidated), "sell" closes a long (LONG)
    posSide: str  # position mode side: "long"/"short" in hedge mode, "net" in net mode: not the side
    sz: str  # quantity of liquidation, in contracts for FUTURES/SWAP
    bkPx: str  # bankruptcy price: the price of the transaction with the system's liquidation account
    ts: str  # liquidation time, ms, as a string

    def to_event(
        self,
        received_ms: int,
        source: str,
        max_age_ms: int | None,
        instrument_of: Callable[[str, str], Instrument] = guess_instrument,
        known: dict[str, Instrument] | None = None,
    ) -> Liquidation:
        """Normalise (`liquidation_event`; `known`: the adapter's memo, `ExchangeAdapter.contracts`)."""
        return liquidation_event(
            self.instId,
            self.side,
            self.sz,
            self.bkPx,
            self.ts,
            received_ms,
            source,
            max_age_ms,
            instrument_of,
            {} if known is None else known,
        )


def liquidation_event(
    inst_id: str,
    order_side: str,
    sz: str,
    bk_px: str,
    ts: str,
    received_ms: int,
    source: str,
    max_age_ms: int | None,
    instrument_of: Callable[[str, str], Instrument],
    known: dict[str, Instrument],
) -> Liquidation:
    """Normalise one detail: contracts x ctVal into base units; the key from the canonical texts of the
    base quantity and `bkPx` (no index, no push time: a repeat gets the key it had). The one rule for
    both ways in (`OkxLiquidation.to_event`, the typed fast path)."""
    side = _SIDES.get(order_side)
    if side is None:
        raise Rejected("bad_value", f"side {order_side[:20]!r}")
    symbol = inst_id
    instrument = known.get(symbol)  # checked before: the symbol and its instrument
    if instrument is None:
        instrument = known[symbol] = listed_contract(instrument_of, EXCHANGE, check_symbol(symbol))
    contracts = amount_text(sz)[1]
    canonical_price, price = price_text(bk_px)
    time_ms = check_ms_text(ts, "ts", received_ms, max_age_ms)
    quantity = contracts * instrument.contract_size
    value = quantity * price  # linear: base quantity x price in USDT or USDC, USDC at par
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
        order_side,  # raw_side
        source,  # source
        True,  # sampled
        dedup_key_of_texts(EXCHANGE, symbol, time_ms, side, canonical_price, canonical_text(quantity)),  # key
    )


@dataclass(slots=True)
class OkxCandle:
    """One `data` row of a candle1m push (the instId comes from `arg`), with OKX's field names."""

    instId: str  # from arg: "BTC-USDT-SWAP"
    ts: str  # open time, ms, as a string: the candle's key
    o: str  # open
    h: str  # high
    l: str  # low  # noqa: E741 (OKX's own name)
    c: str  # close
    vol: str  # volume in contracts (derivatives): not used
    volCcy: str  # volume in base currency (derivatives)
    volCcyQuote: str  # volume in quote currency (USDT for BTC-USDT-SWAP)
    confirm: str  # "0": the minute is open, "1": closed

    def to_event(self, received_ms: int, source: str, max_age_ms: int | None) -> Candle:
        symbol = check_symbol(self.instId)
        closed = _CONFIRM.get(self.confirm)
        if closed is None:
            raise Rejected("bad_value", f"confirm {self.confirm[:10]!r}")
        low, high = candle_price(self.l), candle_price(self.h)
        if low > high:
            raise Rejected("bad_value", "low above high")
        return Candle(  # positional: keywords cost ~0.3 us per event
            EXCHANGE,  # exchange
            symbol,  # symbol
            check_ms_text(self.ts, "ts", received_ms, max_age_ms),  # open_ms
            candle_price(self.o),  # open
            high,  # high
            low,  # low
            candle_price(self.c),  # close
            volume(self.volCcy),  # volume
            volume(self.volCcyQuote),  # quote_volume
            closed,  # closed
            received_ms,  # received_ms
            source,  # source
        )


def parse_liquidation(inst_id: str, detail: Any) -> OkxLiquidation:
    """Parse one `details[]` item of a `data` item. Sample frame::

    {"arg":{"channel":"liquidation-orders","instType":"SWAP"},
     "data":[{"details":[{"bkLoss":"0","bkPx":"97012.5","ccy":"","posSide":"net","side":"sell",
                          "sz":"25","ts":"1732400000321"}],
              "instFamily":"BTC-USDT","instId":"BTC-USDT-SWAP","instType":"SWAP","uly":"BTC-USDT"}]}
    """
    if type(detail) is not dict:
        raise Rejected("bad_field", "details item")
    get = detail.get
    side, pos_side, sz, bk_px, ts = get("side"), get("posSide"), get("sz"), get("bkPx"), get("ts")
    if type(side) is str and type(sz) is str and type(bk_px) is str and type(ts) is str:
        return OkxLiquidation(inst_id, side, pos_side if type(pos_side) is str else "", sz, bk_px, ts)
    # Slow path, only for bad input: name the first field that is wrong.
    return OkxLiquidation(
        instId=inst_id,
        side=text_field(detail, "side"),
        posSide="",
        sz=text_field(detail, "sz"),
        bkPx=text_field(detail, "bkPx"),
        ts=text_field(detail, "ts"),
    )


def parse_candle(row: Any, inst_id: str) -> OkxCandle:
    """Parse one `data` row of a candle1m push. Sample frame::

    {"arg":{"channel":"candle1m","instId":"BTC-USDT-SWAP"},
     "data":[["1732400000000","97300","97410","97150.2","97210.1","38821","388.21","37766554.2","0"]]}
    """
    if type(row) is not list or len(row) < 9:
        raise Rejected("bad_field", "data row")
    for value in row[:9]:
        if type(value) is not str:
            raise Rejected("bad_field", "data row value")
    ts, o, h, low, c, vol, vol_ccy, vol_quote, confirm = row[:9]
    return OkxCandle(inst_id, ts, o, h, low, c, vol, vol_ccy, vol_quote, confirm)


class _Detail(msgspec.Struct, gc=False):
    """One `details[]` item as far as the fast path reads it (`OkxLiquidation` without the instId)."""

    side: str  # order side
    sz: str  # contracts
    bkPx: str  # bankruptcy price
    ts: str  # ms, as a string
    # posSide is not read: it never decides the side, and `parse_liquidation` takes any value of it.


class _Item(msgspec.Struct, gc=False):
    """One `data` item of a liquidation-orders push: the contract and its details."""

    instId: str
    details: list[_Detail]


class _Arg(msgspec.Struct, gc=False):
    channel: str  # "liquidation-orders"


class _Frame(msgspec.Struct, gc=False):
    """A liquidation-orders push as far as the fast path reads it."""

    arg: _Arg
    data: list[_Item]
    event: msgspec.Raw = msgspec.Raw()  # present on answers and notices only: left to the general way


# The usual liquidation push decoded and type-checked in one pass, no dicts for the fields nobody
# reads. Whatever it refuses (a wrong type or a missing field anywhere, bad JSON, a candle push) goes
# the general way, item by item, which names the reason of each drop; it accepts nothing the general
# way would refuse before `liquidation_event()`.
_decode_frame = msgspec.json.Decoder(_Frame).decode


class OkxAdapter(ExchangeAdapter):
    """OKX v5: the all-contracts liquidation channel on the public endpoint, candles on the business one."""

    name: ClassVar[str] = EXCHANGE
    ping_interval_s: ClassVar[float | None] = 25.0
    messages_per_s: ClassVar[float] = 5.0

    def fixed_streams(self) -> list[Shard]:
        # No per-symbol channel: the one subscription covers every contract, whole market or not.
        return [Shard(f"{EXCHANGE}-liquidations", ALL_LIQUIDATIONS, idle_ok=True, fixed=True)]

    def streams_of(self, symbol: str, candles: bool) -> list[str]:
        return [f"{CANDLES}:{symbol}"] if candles else []

    def shard_fits(self, shard: Shard, streams: list[str]) -> bool:
        return len(shard.wanted) + len(streams) <= MAX_STREAMS

    def connect_url(self, shard: Shard) -> str:
        """Liquidations on the public endpoint; candles on the business endpoint."""
        return self.url if shard.fixed else business_url(self.url)

    def subscribe(self, shard: Shard) -> bool:
        """Send every stream; confirmed later, when each one is acknowledged (or refused)."""
        self.request(shard, True, [s for s in shard.wanted if s not in self.refused])
        return not shard.pending

    def request(self, shard: Shard, subscribe: bool, streams: list[str]) -> None:
        op = "subscribe" if subscribe else "unsubscribe"
        for start in range(0, len(streams), SUBSCRIBE_BATCH):
            batch = streams[start : start + SUBSCRIBE_BATCH]
            for stream in batch:  # OKX acknowledges each arg on its own
                shard.pending[_pending_key(subscribe, stream)] = (subscribe, [stream])
            args = [stream_arg(s) for s in batch]
            shard.send(json.dumps({"op": op, "args": args}, ensure_ascii=False, separators=(",", ":")))

    def ping_message(self) -> str:
        return PING

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """The dispatcher: `pong` text, events (acks, errors, notices), then data by `arg.channel`;
        bad input is counted, never raised (an unnamed error event ends the session)."""
        if raw == PONG or raw == b"pong":
            return []
        if clean_frame(raw):
            events = self._fast(raw, received_ms)
            if events is not None:
                return events
        try:
            msg = decode(raw)
            event = msg.get("event")
            if event is not None:
                self._on_event(msg, raw)
                return []
            arg = msg.get("arg")
            if type(arg) is not dict:
                raise Rejected("unknown_message")
            channel = arg.get("channel")
            if channel == LIQUIDATIONS:
                return self._on_liquidations(msg, raw, received_ms)
            if channel == CANDLES:
                inst_id = arg.get("instId")
                if type(inst_id) is not str:
                    raise Rejected("bad_field", "arg.instId")
                return self._on_candles(msg, raw, inst_id, received_ms)
            raise Rejected("unknown_message", str(channel)[:40])
        except Rejected as exc:
            self._drop(exc, raw)
        return []

    def _fast(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle] | None:
        """The events of a clean liquidation push the typed decoder accepts (a clean frame needs no
        `check_texts`); None: parse it the general way. Each detail still costs only itself."""
        try:
            frame = _decode_frame(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        if frame.event or frame.arg.channel != LIQUIDATIONS:
            return None
        events: list[Liquidation | Candle] = []
        followed = None if self.whole_market else self.symbols
        source, max_age_ms, instrument_of, known = self.source, self.max_age_ms, self.instrument_of, self.contracts
        for item in frame.data:
            inst_id = item.instId
            if followed is not None and inst_id not in followed:
                self.health.drops[_NOT_FOLLOWED] += len(item.details)  # quiet: counted, not logged
                continue
            for d in item.details:
                try:
                    events.append(
                        liquidation_event(
                            inst_id, d.side, d.sz, d.bkPx, d.ts, received_ms, source, max_age_ms, instrument_of, known
                        )
                    )
                except Rejected as exc:
                    self._drop(exc, raw)
                except Exception:
                    self._parser_bug(raw)
        return events

    def _on_liquidations(self, msg: dict[str, Any], raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        # One bad detail must not cost the good ones of the same frame, whatever is wrong with it.
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        followed = None if self.whole_market else self.symbols
        for item in list_field(msg, "data"):
            try:
                if type(item) is not dict:
                    raise Rejected("bad_field", "data item")
                inst_id = text_field(item, "instId")
                details = item.get("details")
                if type(details) is not list:
                    raise Rejected("missing_field" if details is None else "bad_field", "details")
                if followed is not None and inst_id not in followed:
                    self.health.drops[_NOT_FOLLOWED] += len(details)  # quiet: counted, not logged
                    continue
            except Rejected as exc:
                self._drop(exc, raw)
                continue
            for detail in details:
                try:
                    liquidation = parse_liquidation(inst_id, detail)
                    if not clean:
                        check_texts(item, skip="instId")
                        check_texts(detail)
                    events.append(
                        liquidation.to_event(
                            received_ms, self.source, self.max_age_ms, self.instrument_of, self.contracts
                        )
                    )
                except Rejected as exc:
                    self._drop(exc, raw)
                except Exception:
                    self._parser_bug(raw)
        return events

    def _on_candles(
        self, msg: dict[str, Any], raw: str | bytes, inst_id: str, received_ms: int
    ) -> list[Liquidation | Candle]:
        events: list[Liquidation | Candle] = []
        clean = clean_frame(raw)
        for row in list_field(msg, "data"):
            try:
                candle = parse_candle(row, inst_id)
                if not clean:
                    for value in row[1:9]:
                        if not value.isprintable():
                            raise Rejected("bad_text", "data row")
                events.append(candle.to_event(received_ms, self.source, self.max_age_ms))
            except Rejected as exc:
                self._drop(exc, raw)
            except Exception:
                self._parser_bug(raw)
        return events

    def _on_event(self, msg: dict[str, Any], raw: str | bytes) -> None:
        """Answers and notices. Sample ack and refusal::

        {"event":"subscribe","arg":{"channel":"candle1m","instId":"BTC-USDT-SWAP"},"connId":"a4d3ae55"}
        {"event":"error","code":"60018","msg":"Wrong URL or channel:candle1m,instId:NOPE-USDT-SWAP doesn't
         exist. Please use the correct URL, channel and parameters referring to API document.","connId":"a4d3ae55"}
        """
        event = msg.get("event")
        shard = self.current
        if event in ("subscribe", "unsubscribe"):
            stream = stream_of(msg.get("arg"))
            if stream is None:
                raise Rejected("bad_field", "arg")
            if shard is not None:
                self._answered(shard, _pending_key(event == "subscribe", stream), True)
            return
        if event == "error":
            if shard is not None:
                self._on_error(shard, msg)
            return
        if event in ("notice", "channel-conn-count"):
            # 64008: "The connection will soon be closed for a service upgrade": the reconnect follows.
            self._log.info(
                "%s: %s", self.name, one_line(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"), 300)
            )
            return
        raise Rejected("unknown_message", f"event {str(event)[:20]}")

    def _on_error(self, shard: Shard, msg: dict[str, Any]) -> None:
        """A refusal costs the stream it names, never the connection. An error that names a stream we
        no longer wait for is only logged; one that names none while requests are pending (60014
        "Requests too frequent") ends the session: the reconnect, after its backoff, subscribes again.
        With nothing pending it is counted (`venue_error`) and the connection carries on."""
        code = one_line(str(msg.get("code", "")), 20)
        text = one_line(str(msg.get("msg", "")), 200)
        reason = f"{code} {text}".strip() or "refused"
        pending = [s for subscribe, streams in shard.pending.values() if subscribe for s in streams]
        named = {f"{channel}:{value}" for channel, value in _NAMED.findall(text)}
        if named:
            hit = [s for s in pending if s in named]
            if not hit:
                self._log.info("%s: error for a stream not awaited: %s", self.name, reason)
                return
        else:
            # An invalid request quoted back ("Invalid request: {...}"): the pending streams it quotes.
            hit = [s for s in pending if stream_arg(s)["channel"] in text and s.partition(":")[2] in text]
            if not hit and len(pending) == 1:
                hit = pending
            if not hit:
                if not pending:
                    raise Rejected("venue_error", reason)
                raise SessionEnded(f"error {reason}")
        for stream in hit:
            self._answered(shard, _pending_key(True, stream), False, reason)


def _pending_key(subscribe: bool, stream: str) -> str:
    return f"{'+' if subscribe else '-'}{stream}"
