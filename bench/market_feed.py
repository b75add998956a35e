"""Fake venues for the whole-market benchmark (`bench/bench_market.py`): instrument lists over REST,
WebSocket servers, and the frames each venue pushes.

One venue is one `VenueFeed` subclass registered in `VENUES` (name -> class). A subclass says how
to build its fake REST server and its fake WebSocket server (the ones the tests use), which
streams a whole-market collector must subscribe on it, and how to write a 1-minute kline frame
and a frame of liquidations: Binance, Bybit, OKX, Gate and Bitget, on their fakes in `tests/fakes/`
(and `collector.replay_server`), reached through the collector's `LIQ_<NAME>_WS_URL` / `LIQ_<NAME>_REST_URL`.

Every liquidation's stored base quantity is its unique marker (`quantity_text`): the bench lists
OKX and Gate contracts of contract value 1 (`ctVal`, `quanto_multiplier`), so contracts = base units,
and writes Bitget's quote `amount` as marker x `PRICE`, so that `amount / price` is the marker again.
Its exchange time is the item's own field: Binance `T`, Bybit `T`, OKX `details[].ts` (string),
Gate `time_ms`, Bitget `ts` (string).

Pushing: the fakes' own `push()` decodes and re-encodes every frame for every peer (fine for
tests, too slow for ~6,000 frames/s on two cores). `Router` instead keeps an index stream -> the
peers subscribed to it (rebuilt every `INDEX_REFRESH_S` from the fakes' `Peer.streams`, which their
subscription handling maintains), takes frames already written as JSON text, and writes each
peer's frames of one tick as unmasked WebSocket text frames in one `transport.write()`. What a
client receives is exactly what the venue would send; only the per-frame cost differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from collector.replay_server import BybitServer, FakeServer, Peer
from tests.fakes.bitget import FakeBitgetRest, FakeBitgetServer, bitget_instrument
from tests.fakes.gate import FakeGateRest, FakeGateServer, gate_contract
from tests.fakes.okx import FakeOkxRest, FakeOkxServer, okx_instrument
from tests.fakes.rest import FakeBinanceRest, FakeBybitRest, FakeRest, binance_market, bybit_market, coins
from tests.fakes.ws import ALL_LIQUIDATIONS, WholeMarketBinance

INDEX_REFRESH_S = 0.5
PRICE = "10.5"  # every liquidation's price; the quantity carries the unique marker
PRICE_X10 = 105  # PRICE in tenths: Bitget's quote amount = marker x PRICE, written exactly


def ws_text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class Router:
    """Frames queued by stream name during a tick, written per peer at `flush()`."""

    def __init__(self, server: FakeServer, *, lower: bool) -> None:
        self.server = server
        self.lower = lower  # Binance matches stream names ignoring case
        self._index: dict[str, list[Peer]] = {}
        self._built = -1.0
        self._out: dict[Peer, list[bytes]] = {}
        self.frames = 0  # frames written to peers
        self.unrouted = 0  # frames nobody was subscribed to (not sent)
        self.max_buffer = 0  # largest transport write buffer seen, bytes: the client reads too slowly

    def _fold(self, stream: str) -> str:
        return stream.lower() if self.lower else stream

    def subscribed(self) -> set[str]:
        """Every stream some open connection is subscribed to (folded)."""
        return {self._fold(s) for p in self.server.connections for s in list(p.streams)}

    def refresh(self, now: float) -> None:
        if now - self._built < INDEX_REFRESH_S:
            return
        index: dict[str, list[Peer]] = {}
        for peer in self.server.connections:
            for stream in list(peer.streams):
                index.setdefault(self._fold(stream), []).append(peer)
        self._index, self._built = index, now

    def queue(self, stream: str, text: str) -> bool:
        peers = self._index.get(stream)
        if not peers:
            self.unrouted += 1
            return False
        frame = ws_text_frame(text.encode())
        for peer in peers:
            self._out.setdefault(peer, []).append(frame)
        return True

    def flush(self) -> None:
        for peer, frames in self._out.items():
            transport = peer.ws.transport
            if transport.is_closing():
                continue
            try:
                transport.write(b"".join(frames))
            except (RuntimeError, ConnectionError):  # closing under us
                continue
            self.frames += len(frames)
            self.max_buffer = max(self.max_buffer, transport.get_write_buffer_size())
        self._out.clear()


@dataclass(frozen=True, slots=True)
class LiqItem:
    """One liquidation to push: `seq` is its unique marker (written as its quantity)."""

    symbol: str
    seq: int
    time_ms: int


def quantity_text(seq: int) -> str:
    """The unique marker: seq 12345 -> "12.345" (a plain decimal, as the venues write amounts)."""
    return f"{seq // 1000}.{seq % 1000:03d}"


def quote_text(seq: int) -> str:
    """The marker x PRICE, exactly: seq 12345 -> "129.6225" (12.345 x 10.5), Bitget's quote amount."""
    tenths = seq * PRICE_X10  # the amount in units of 0.0001
    return f"{tenths // 10_000}.{tenths % 10_000:04d}"


class VenueFeed:
    """A fake venue for the whole market: REST list, WebSocket server, frames."""

    name: ClassVar[str]
    lower: ClassVar[bool] = False  # stream names compared lower-cased

    def __init__(self, n_symbols: int, *, kline_period_s: float, items_per_frame: int = 1) -> None:
        self.kline_period_s = kline_period_s
        self.items_per_frame = items_per_frame
        self.rest = self.make_rest(n_symbols)
        self.server = self.make_server()
        self.router = Router(self.server, lower=self.lower)
        self.symbols = self.listed_symbols()
        self.kline_frames = 0
        self.liquidation_frames = 0
        self.liquidations = 0
        self.marker_sum = 0  # sum of the pushed markers (seq): the stored quantities must sum to this / 1000

    # -- per venue -----------------------------------------------------------------------------

    def make_rest(self, n_symbols: int) -> FakeRest:
        raise NotImplementedError

    def make_server(self) -> FakeServer:
        raise NotImplementedError

    def listed_symbols(self) -> list[str]:
        raise NotImplementedError

    def expected_streams(self) -> set[str]:
        """What a whole-market collector must have subscribed (folded like `Router`)."""
        raise NotImplementedError

    def kline(self, symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
        """(stream, frame text) of one 1-minute kline update."""
        raise NotImplementedError

    def liquidation_frame(self, symbol: str, items: list[LiqItem], now_ms: int) -> tuple[str, str]:
        """(stream, frame text) carrying `items` (all of `symbol`; at most `items_per_frame`)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        upper = self.name.upper()
        return {f"LIQ_{upper}_WS_URL": self.server.url, f"LIQ_{upper}_REST_URL": self.rest.url}

    async def start(self) -> None:
        self.rest.start()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.close()
        self.rest.stop()

    def missing(self) -> int:
        """How many expected streams no open connection holds yet."""
        return len(self.expected_streams() - self.router.subscribed())

    def unexpected(self) -> set[str]:
        """Streams some connection holds that `expected_streams()` does not name (the adapter subscribes more)."""
        return self.router.subscribed() - self.expected_streams()

    def push_kline(self, symbol: str, now_ms: int, tick: int) -> None:
        stream, text = self.kline(symbol, now_ms, tick)
        if self.router.queue(stream, text):
            self.kline_frames += 1

    def push_liquidations(self, symbol: str, items: list[LiqItem], now_ms: int) -> bool:
        stream, text = self.liquidation_frame(symbol, items, now_ms)
        if self.router.queue(stream, text):
            self.liquidation_frames += 1
            self.liquidations += len(items)
            self.marker_sum += sum(i.seq for i in items)
            return True
        return False


def _ohlc(tick: int) -> tuple[str, str, str, str, str, str]:
    """Plausible changing candle values: open, high, low, close, volume, quote volume."""
    close = 10 + (tick % 97) / 100
    volume = 100 + tick % 1000
    return "10.00", "11.00", "9.50", f"{close:.2f}", f"{volume}.5", f"{volume * 10}.25"


def binance_kline(symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
    """(stream, combined-stream frame text) of one Binance 1-minute kline update of an open minute."""
    start = now_ms - now_ms % 60_000
    o, h, lo, c, v, q = _ohlc(tick)
    stream = f"{symbol.lower()}@kline_1m"
    k = (
        f'{{"t":{start},"T":{start + 59_999},"s":"{symbol}","i":"1m","f":100,"L":{100 + tick},'
        f'"o":"{o}","c":"{c}","h":"{h}","l":"{lo}","v":"{v}","n":{tick},"x":false,'
        f'"q":"{q}","V":"50.1","Q":"501.0","B":"0"}}'
    )
    return stream, f'{{"stream":"{stream}","data":{{"e":"kline","E":{now_ms},"s":"{symbol}","k":{k}}}}}'


class BinanceFeed(VenueFeed):
    """Binance USD-M: `<symbol>@kline_1m` every 250 ms per symbol, forceOrder on `!forceOrder@arr`."""

    name = "binance"
    lower = True

    def make_rest(self, n_symbols: int) -> FakeRest:
        return FakeBinanceRest(binance_market(n_symbols))

    def make_server(self) -> FakeServer:
        return WholeMarketBinance()

    def listed_symbols(self) -> list[str]:
        assert isinstance(self.rest, FakeBinanceRest)
        return [str(s["symbol"]) for s in self.rest.symbols]

    def expected_streams(self) -> set[str]:
        return {ALL_LIQUIDATIONS.lower()} | {f"{s.lower()}@kline_1m" for s in self.symbols}

    def kline(self, symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
        return binance_kline(symbol, now_ms, tick)

    def liquidation_frame(self, symbol: str, items: list[LiqItem], now_ms: int) -> tuple[str, str]:
        (item,) = items  # Binance: one liquidation a frame
        side = "SELL" if item.seq % 2 else "BUY"
        qty = quantity_text(item.seq)
        order = (
            f'{{"s":"{symbol}","S":"{side}","o":"LIMIT","f":"IOC","q":"{qty}","p":"{PRICE}","ap":"{PRICE}",'
            f'"X":"FILLED","l":"{qty}","z":"{qty}","T":{item.time_ms}}}'
        )
        data = f'{{"e":"forceOrder","E":{now_ms},"o":{order}}}'
        return ALL_LIQUIDATIONS.lower(), f'{{"stream":"{ALL_LIQUIDATIONS}","data":{data}}}'


class BybitFeed(VenueFeed):
    """Bybit v5 linear: `kline.1.<SYMBOL>` on its cadence, `allLiquidation.<SYMBOL>` with several items."""

    name = "bybit"

    def make_rest(self, n_symbols: int) -> FakeRest:
        return FakeBybitRest(bybit_market(n_symbols))

    def make_server(self) -> FakeServer:
        return BybitServer()

    def listed_symbols(self) -> list[str]:
        assert isinstance(self.rest, FakeBybitRest)
        return [str(i["symbol"]) for i in self.rest.instruments]

    def expected_streams(self) -> set[str]:
        return {f"allLiquidation.{s}" for s in self.symbols} | {f"kline.1.{s}" for s in self.symbols}

    def kline(self, symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
        start = now_ms - now_ms % 60_000
        o, h, lo, c, v, q = _ohlc(tick)
        topic = f"kline.1.{symbol}"
        item = (
            f'{{"start":{start},"end":{start + 59_999},"interval":"1","open":"{o}","close":"{c}",'
            f'"high":"{h}","low":"{lo}","volume":"{v}","turnover":"{q}","confirm":false,"timestamp":{now_ms}}}'
        )
        return topic, f'{{"topic":"{topic}","type":"snapshot","ts":{now_ms},"data":[{item}]}}'

    def liquidation_frame(self, symbol: str, items: list[LiqItem], now_ms: int) -> tuple[str, str]:
        topic = f"allLiquidation.{symbol}"
        data = ",".join(
            f'{{"T":{i.time_ms},"s":"{symbol}","S":"{"Buy" if i.seq % 2 else "Sell"}",'
            f'"v":"{quantity_text(i.seq)}","p":"{PRICE}"}}'
            for i in items
        )
        return topic, f'{{"topic":"{topic}","type":"snapshot","ts":{now_ms},"data":[{data}]}}'


class OkxFeed(VenueFeed):
    """OKX v5: `candle1m:<instId>` (business path) on its cadence, `liquidation-orders:SWAP` (public path)
    with `items_per_frame` details of one instId a frame; `liquidation-orders:FUTURES` subscribed, unused.
    One `FakeOkxServer` serves both paths, so one `Router` reaches both kinds of connection."""

    name = "okx"

    def make_rest(self, n_symbols: int) -> FakeRest:
        swaps = [okx_instrument(f"{c}-USDT-SWAP", "1") for c in coins(n_symbols)]  # ctVal 1: contracts = base
        return FakeOkxRest({"SWAP": swaps, "FUTURES": []})

    def make_server(self) -> FakeServer:
        return FakeOkxServer()

    def listed_symbols(self) -> list[str]:
        assert isinstance(self.rest, FakeOkxRest)
        return [str(i["instId"]) for i in self.rest.instruments["SWAP"]]

    def expected_streams(self) -> set[str]:
        return {"liquidation-orders:SWAP", "liquidation-orders:FUTURES"} | {f"candle1m:{s}" for s in self.symbols}

    def kline(self, symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
        start = now_ms - now_ms % 60_000
        o, h, lo, c, v, q = _ohlc(tick)
        stream = f"candle1m:{symbol}"
        row = f'["{start}","{o}","{h}","{lo}","{c}","{v}","{v}","{q}","0"]'
        return stream, f'{{"arg":{{"channel":"candle1m","instId":"{symbol}"}},"data":[{row}]}}'

    def liquidation_frame(self, symbol: str, items: list[LiqItem], now_ms: int) -> tuple[str, str]:
        family = symbol.rsplit("-", 1)[0]
        details = ",".join(
            f'{{"bkLoss":"0","bkPx":"{PRICE}","ccy":"","posSide":"net","side":"{"sell" if i.seq % 2 else "buy"}",'
            f'"sz":"{quantity_text(i.seq)}","ts":"{i.time_ms}"}}'
            for i in items
        )
        data = (
            f'{{"details":[{details}],"instFamily":"{family}","instId":"{symbol}","instType":"SWAP","uly":"{family}"}}'
        )
        return (
            "liquidation-orders:SWAP",
            f'{{"arg":{{"channel":"liquidation-orders","instType":"SWAP"}},"data":[{data}]}}',
        )


class GateFeed(VenueFeed):
    """Gate USDT futures: `futures.candlesticks.1m.<contract>` on its cadence, `futures.public_liquidates.!all`
    updates with `items_per_frame` items of one contract (sizes and prices as JSON numbers, as Gate writes them)."""

    name = "gate"

    def make_rest(self, n_symbols: int) -> FakeRest:
        return FakeGateRest([gate_contract(f"{c}_USDT", "1") for c in coins(n_symbols)])  # contracts = base

    def make_server(self) -> FakeServer:
        return FakeGateServer()

    def listed_symbols(self) -> list[str]:
        assert isinstance(self.rest, FakeGateRest)
        return [str(c["name"]) for c in self.rest.contracts]

    def expected_streams(self) -> set[str]:
        return {"futures.public_liquidates.!all"} | {f"futures.candlesticks.1m.{s}" for s in self.symbols}

    def kline(self, symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
        start = now_ms - now_ms % 60_000
        o, h, lo, c, _v, q = _ohlc(tick)
        item = (
            f'{{"t":{start // 1000},"v":{100 + tick % 1000},"c":"{c}","h":"{h}","l":"{lo}","o":"{o}",'
            f'"n":"1m_{symbol}","a":"{q}","w":false}}'
        )
        frame = (
            f'{{"time":{now_ms // 1000},"time_ms":{now_ms},"channel":"futures.candlesticks","event":"update",'
            f'"result":[{item}]}}'
        )
        return f"futures.candlesticks.1m.{symbol}", frame

    def liquidation_frame(self, symbol: str, items: list[LiqItem], now_ms: int) -> tuple[str, str]:
        result = ",".join(
            f'{{"price":{PRICE},"size":{"-" if i.seq % 2 else ""}{quantity_text(i.seq)},"time_ms":{i.time_ms},'
            f'"contract":"{symbol}"}}'
            for i in items
        )
        frame = (
            f'{{"channel":"futures.public_liquidates","event":"update","time":{now_ms // 1000},"time_ms":{now_ms},'
            f'"result":[{result}]}}'
        )
        return "futures.public_liquidates.!all", frame


class BitgetFeed(VenueFeed):
    """Bitget UTA: `kline.usdt-futures.<SYMBOL>` on its cadence, `liquidation.usdt-futures` with
    `items_per_frame` items a frame (amounts in quote: marker x PRICE); `liquidation.usdc-futures` subscribed, unused."""

    name = "bitget"

    def make_rest(self, n_symbols: int) -> FakeRest:
        return FakeBitgetRest([bitget_instrument(f"{c}USDT", c) for c in coins(n_symbols)])

    def make_server(self) -> FakeServer:
        return FakeBitgetServer()

    def listed_symbols(self) -> list[str]:
        assert isinstance(self.rest, FakeBitgetRest)
        return [str(i["symbol"]) for i in self.rest.instruments]

    def expected_streams(self) -> set[str]:
        fixed = {"liquidation.usdt-futures", "liquidation.usdc-futures"}
        return fixed | {f"kline.usdt-futures.{s}" for s in self.symbols}

    def kline(self, symbol: str, now_ms: int, tick: int) -> tuple[str, str]:
        start = now_ms - now_ms % 60_000
        o, h, lo, c, v, q = _ohlc(tick)
        item = (
            f'{{"start":"{start}","open":"{o}","high":"{h}","low":"{lo}","close":"{c}","volume":"{v}",'
            f'"turnover":"{q}"}}'
        )
        arg = f'{{"instType":"usdt-futures","symbol":"{symbol}","topic":"kline","interval":"1m"}}'
        return f"kline.usdt-futures.{symbol}", f'{{"data":[{item}],"arg":{arg},"action":"update","ts":{now_ms}}}'

    def liquidation_frame(self, symbol: str, items: list[LiqItem], now_ms: int) -> tuple[str, str]:
        data = ",".join(
            f'{{"symbol":"{symbol}","side":"{"buy" if i.seq % 2 else "sell"}","price":"{PRICE}",'
            f'"amount":"{quote_text(i.seq)}","ts":"{i.time_ms}"}}'
            for i in items
        )
        arg = '{"instType":"usdt-futures","topic":"liquidation"}'
        return "liquidation.usdt-futures", f'{{"data":[{data}],"arg":{arg},"action":"update","ts":{now_ms}}}'


# The venue table: name -> its fake, in the order the bench lists them.
VENUES: dict[str, type[VenueFeed]] = {
    "binance": BinanceFeed,
    "bybit": BybitFeed,
    "okx": OkxFeed,
    "gate": GateFeed,
    "bitget": BitgetFeed,
}
