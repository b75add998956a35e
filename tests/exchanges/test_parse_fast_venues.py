"""The typed fast paths of OKX, Gate and Bitget, and Bybit's one-pass liquidation reading (issues
#10 and #11), give exactly what the general path gives: the same events with the same keys, the
same drops with the same reasons, frame by frame.

As in test_parse_fast, the general path is forced by telling the adapter module that no frame is
clean (`clean_frame`): the fast paths only read clean frames, and on a clean frame `check_texts`
finds nothing, so the forced run is what the dispatcher did before the fast path existed.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.bench_parse import _listed, market_frames
from collector.exchanges import bitget, bybit, gate, okx
from collector.exchanges.bitget import BitgetAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.connection import ExchangeAdapter
from collector.exchanges.gate import GateAdapter
from collector.exchanges.okx import OkxAdapter
from collector.health import StreamHealth
from tests.exchanges.harness import RECEIVED_MS, adapter_settings, frames
from tests.exchanges.test_parse_fast import _DEEP, _fuzz, _mutated

_MODULES: dict[str, ModuleType] = {"okx": okx, "gate": gate, "bitget": bitget, "bybit": bybit}
_CLASSES: dict[str, type[ExchangeAdapter]] = {
    "okx": OkxAdapter,
    "gate": GateAdapter,
    "bitget": BitgetAdapter,
    "bybit": BybitAdapter,
}
# An explicit list per venue, in its own symbols: the fast paths filter as the general ones do.
_FOLLOWED = {"okx": "BTC-USDT-SWAP,ETH-USDT-SWAP", "gate": "BTC_USDT", "bitget": "BTCUSDT", "bybit": "BTCUSDT"}
_MARKET_KINDS = {
    "okx": "okx liquidation",
    "gate": "gate liquidates",
    "bitget": "bitget liquidation",
    "bybit": "bybit allLiquidation",
}


def _adapter(exchange: str, symbols: str = "ALL") -> Any:
    settings = adapter_settings(LIQ_EXCHANGES=exchange, LIQ_SYMBOLS=symbols)
    adapter = _CLASSES[exchange](settings, asyncio.Queue(), StreamHealth(exchange, "test"), url="ws://127.0.0.1:1/x")
    adapter.instrument_of = _listed  # OKX and Gate count contracts: a listed contract size per coin
    return adapter


@contextmanager
def _general_path(exchange: str) -> Iterator[None]:
    with mock.patch.object(_MODULES[exchange], "clean_frame", lambda raw: False):
        yield


def _both(exchange: str, raw: str | bytes, symbols: str = "ALL") -> tuple[Any, Any]:
    """(events, drops) of the dispatcher as it is and of the general path alone."""
    fast = _adapter(exchange, symbols)
    got = fast.handle(raw, RECEIVED_MS)
    general = _adapter(exchange, symbols)
    with _general_path(exchange):
        expected = general.handle(raw, RECEIVED_MS)
    return (got, dict(fast.health.drops)), (expected, dict(general.health.drops))


def _assert_same(exchange: str, raw: str) -> None:
    for symbols in ("ALL", _FOLLOWED[exchange]):
        for text in (raw, raw.encode()):
            got, expected = _both(exchange, text, symbols)
            assert got == expected, (symbols, text)


@pytest.mark.parametrize("exchange", ["okx", "gate", "bitget"])
def test_whole_market_frames_give_what_the_general_path_gives(exchange: str) -> None:
    market = market_frames(_MARKET_KINDS[exchange], 1500)
    fast, general = _adapter(exchange), _adapter(exchange)
    for raw, count in market:
        got = fast.handle(raw, RECEIVED_MS)
        with _general_path(exchange):
            expected = general.handle(raw, RECEIVED_MS)
        assert got == expected and len(got) == count, raw
        assert [e.key for e in got] == [e.key for e in expected]
    assert not fast.health.drops and not general.health.drops


@pytest.mark.parametrize("exchange", ["okx", "gate", "bitget", "bybit"])
def test_the_fast_path_reads_the_usual_liquidation_frames(exchange: str) -> None:
    """Guards the equality tests against passing because nothing takes the fast path (for Bybit: the
    one-pass reading, which never needs the two-step decoder on a liquidation frame)."""
    general = mock.patch.object(_MODULES[exchange], "decode", side_effect=AssertionError("general path"))
    two_step = (
        mock.patch.object(bybit, "_decode_liquidations", side_effect=AssertionError("two-step"))
        if exchange == "bybit"
        else mock.patch.object(_MODULES[exchange], "EXCHANGE", _MODULES[exchange].EXCHANGE)
    )
    usual = market_frames(_MARKET_KINDS[exchange], 1000)
    assert any(not raw.isascii() for raw, _ in usual)  # coins like 币安人生: printable, so clean too
    with general, two_step:
        adapter = _adapter(exchange)
        for raw, count in usual:
            assert len(adapter.handle(raw, RECEIVED_MS)) == count
            if raw.isascii():  # bytes are clean only as ASCII (websockets gives text frames as str)
                assert len(adapter.handle(raw.encode(), RECEIVED_MS)) == count


def _compact(frame: Any) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


# -- OKX ------------------------------------------------------------------------------------------

_OKX_DETAIL = {
    "bkLoss": "0",
    "bkPx": "97012.50",
    "ccy": "",
    "posSide": "net",
    "side": "sell",
    "sz": "25",
    "ts": "1732400001001",
}


def _okx(*details: dict[str, Any], inst_id: Any = "BTC-USDT-SWAP", **frame: Any) -> str:
    item = {"details": [dict(_OKX_DETAIL, **d) for d in details], "instId": inst_id}
    return _compact({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [item]} | frame)


_OKX_EDGES = [
    _okx({}),
    _okx({}, {}, {"side": "buy"}),  # twins: one key (no index in OKX's key)
    _okx({"sz": "25.000"}, {"sz": "2.5E+1"}, {"sz": "025"}, {"sz": "0"}, {"sz": "1" * 29}),
    _okx({"bkPx": "0.0000001000"}, {"bkPx": "1e-7"}, {"bkPx": "NaN"}, {"bkPx": "-1"}, {"bkPx": ""}),
    _okx({"bkPx": "999999999999999.9"}, {"sz": "1000000000000000"}, {"sz": "0.0000000000000000001"}),
    _okx({"side": "SELL"}, {"side": ""}, {"ts": "17324000010010000"}, {"ts": "1732400001001.0"}, {"ts": "-1"}),
    _okx({"ts": str(RECEIVED_MS + 400_000)}, {"ts": "12"}),
    _okx({"posSide": 7}, {}),  # any posSide: the general way reads it as ""
    _okx({"posSide": None}),
    _okx({"sz": 25}, {}),  # one detail of a wrong type: the general way, detail by detail
    _okx({"ts": 1732400001001}),
    _okx({"x": _DEEP}),
    _okx({}, inst_id="币安人生-USDT-SWAP"),
    _okx({}, inst_id="BTC-USD-SWAP"),  # inverse: no USD quote, not listed
    _okx({}, inst_id="btc usdt"),
    _okx({}, inst_id=7),
    _okx({}, event="subscribe"),
    _okx({}, event=None),
    _okx({}, arg={"channel": "candle1m", "instId": "BTC-USDT-SWAP"}),
    _okx({}, arg={"channel": 5}),
    _okx({}, arg=None),
    _okx({}, data=[]),
    _okx({}, data=[{"instId": "BTC-USDT-SWAP", "details": []}, 7]),
    _okx({}, data=[{"instId": "BTC-USDT-SWAP"}]),
    _okx({}, data=None),
    _okx({}).replace('"instId":"BTC-USDT-SWAP"', '"instId":"BTC-USDT-SWAP","instId":"ETH-USDT-SWAP"'),
    _okx({}).replace('"channel":"liquidation-orders"', '"channel":"candle1m","channel":"liquidation-orders"'),
    _compact(frames("okx")["candle_open"]),
    "pong",
    "",
    "[]",
]


@pytest.mark.parametrize("raw", _OKX_EDGES)
def test_okx_edge_frames_give_what_the_general_path_gives(raw: str) -> None:
    _assert_same("okx", raw)


def test_okx_explicit_list_counts_the_contracts_it_does_not_follow() -> None:
    raw = _okx({}, {"side": "buy"}, inst_id="SOL-USDT-SWAP")
    adapter = _adapter("okx", _FOLLOWED["okx"])
    assert adapter.handle(raw, RECEIVED_MS) == []
    assert adapter.health.drops == {"not_followed": 2}


# -- Gate -----------------------------------------------------------------------------------------


def _gate(*items: dict[str, Any], **frame: Any) -> str:
    good = {"price": "97012.50", "size": -25, "time_ms": 1732400001001, "contract": "BTC_USDT"}
    base = {"channel": "futures.public_liquidates", "event": "update", "time": 1732400002, "time_ms": 1732400002000}
    return _compact(base | {"result": [dict(good, **i) for i in items]} | frame)


_GATE_EDGES = [
    _gate({}),
    _gate({}, {}, {"size": 25}),  # twins: one key each, by index
    _gate({"price": 97012.5}, {"price": 97012}, {"price": 1e-7}, {"price": 1e20}, {"price": 0.1 + 0.2}),
    _gate({"price": "9.70125E+4"}, {"price": "0.0000001000"}, {"price": "-1"}, {"price": ""}, {"price": "NaN"}),
    _gate({"size": "-25"}, {"size": "25.0"}, {"size": -25.5}, {"size": 0}, {"size": -0.0}, {"size": "-"}),
    _gate({"size": 2**63 - 1}, {"size": -(2**63)}, {"size": 2**63}, {"size": 10**30}),  # past int64: the general way
    _gate({"size": True}, {}),
    _gate({"fill_price": "97100.5"}, {"fill_price": 0}, {"fill_price": 0.0}, {"fill_price": ""}, {"fill_price": None}),
    _gate({"fill_price": "0"}, {"fill_price": 97100.25}),
    _gate({"order_size": 3, "size": -100}, {"order_size": "-3"}, {"order_size": None}, {"order_size": 0}),
    _gate({"time_ms": 1732400001001.0}, {}),
    _gate({"time_ms": "1732400001001"}),
    _gate({"time_ms": RECEIVED_MS + 400_000}, {"time_ms": 12}),
    _gate({"contract": "币安人生_USDT"}, {"contract": "NOPE USDT"}, {"contract": "BTC_USD"}),
    _gate({"contract": 5}),
    _gate({"x": _DEEP}),
    _gate({}, time_ms=None),
    _gate({}, time_ms="1732400002000"),
    _gate({}, time_ms=1732400002000.5),
    _gate({}, time_ms=10**30),
    _gate({}, event="subscribe"),
    _gate({}, event="all"),
    _gate({}, channel="futures.pong"),
    _gate({}, channel="futures.candlesticks"),
    _gate({}, result=None),
    _gate({}, result=[7]),
    _gate({}, result=[]),
    _gate({}).replace('"event":"update"', '"event":"update","event":"subscribe"'),
    _compact(frames("gate")["candle_open"]),
    _compact(frames("gate")["subscribe_refused"]),
    "",
    "[]",
]


@pytest.mark.parametrize("raw", _GATE_EDGES)
def test_gate_edge_frames_give_what_the_general_path_gives(raw: str) -> None:
    _assert_same("gate", raw)


_json_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.from_regex(r"-?(0|[1-9]\d{0,20})(\.\d{1,20})?([eE][+-]?\d{1,3})?", fullmatch=True),
)


@_fuzz
@given(price=_json_numbers, size=_json_numbers, fill=st.one_of(st.none(), _json_numbers))
def test_gate_numbers_read_by_either_decoder_give_the_same_events(price: Any, size: Any, fill: Any) -> None:
    """JSON numbers as Gate writes them (the regex ones raw, so "1.50e3" and 20-digit fractions
    reach both decoders as written): msgspec and orjson/json read them alike."""
    raw = _gate({"price": "P", "size": "S", "fill_price": "F"})
    for mark, value in (("P", price), ("S", size), ("F", fill)):
        raw = raw.replace(
            f'"{mark}"', "null" if value is None else str(value) if type(value) is str else json.dumps(value)
        )
    got, expected = _both("gate", raw)
    assert got == expected


# -- Bitget ---------------------------------------------------------------------------------------


def _bitget(*items: dict[str, Any], inst_type: Any = "usdt-futures", **frame: Any) -> str:
    good = {"symbol": "BTCUSDT", "side": "buy", "price": "97012.50", "amount": "24253.1250", "ts": "1732400001001"}
    arg = {"instType": inst_type, "topic": "liquidation"}
    base = {"data": [dict(good, **i) for i in items], "arg": arg, "action": "update", "ts": 1732400002000}
    return _compact(base | frame)


_BITGET_EDGES = [
    _bitget({}),
    _bitget({}, {}, {"side": "sell"}),
    _bitget({}, inst_type="usdc-futures"),
    _bitget({}, inst_type="coin-futures"),
    _bitget({}, inst_type=5),
    _bitget({}, inst_type=["usdt-futures"]),  # unhashable: once a TypeError out of the general way
    _bitget({"amount": "24253.125"}, {"amount": "2.4253125E+4"}, {"amount": "0"}, {"amount": "1" * 29}),
    _bitget({"amount": "20000000000"}, {"amount": "0.0000000000000000001"}, {"price": "0.0000001000"}),
    _bitget({"price": "1e-7"}, {"price": "NaN"}, {"price": "-1"}, {"price": ""}, {"price": "00.5"}),
    _bitget({"side": "Buy"}, {"side": ""}, {"ts": "17324000010010000"}, {"ts": "1732400001001.0"}, {"ts": "x"}),
    _bitget({"ts": str(RECEIVED_MS + 400_000)}, {"ts": "12"}),
    _bitget({"ts": 1732400001001}, {}),  # one item of a wrong type: the general way, item by item
    _bitget({"price": 97012.5}),
    _bitget({"x": _DEEP}),
    _bitget({"symbol": "币安人生USDT"}, {"symbol": "ETHUSDT"}, {"symbol": "BTC USDT"}, {"symbol": "WEIRD"}),
    _bitget({}, event="subscribe"),
    _bitget({}, event=None),
    _bitget({}, arg={"instType": "usdt-futures", "topic": "kline", "symbol": "BTCUSDT", "interval": "1m"}),
    _bitget({}, arg=None),
    _bitget({}, data=[]),
    _bitget({}, data=[7]),
    _bitget({}, data=None),
    _bitget({}).replace('"symbol":"BTCUSDT"', '"symbol":"BTCUSDT","symbol":"ETHUSDT"'),
    _compact(frames("bitget")["kline_open"]),
    _compact(frames("bitget")["subscribe_refused"]),
    "pong",
    "",
    "[]",
]


@pytest.mark.parametrize("raw", _BITGET_EDGES)
def test_bitget_edge_frames_give_what_the_general_path_gives(raw: str) -> None:
    _assert_same("bitget", raw)


# -- Bybit's one-pass reading ---------------------------------------------------------------------


def _bybit(*items: dict[str, Any], **frame: Any) -> str:
    good = {"T": 1732400001001, "s": "BTCUSDT", "S": "Buy", "v": "0.250", "p": "97012.50"}
    base = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1732400002000}
    return _compact(base | {"data": [dict(good, **i) for i in items]} | frame)


_BYBIT_EDGES = [
    _bybit({}, {}, {"S": "Sell"}),
    _bybit({}, topic="allLiquidation"),
    _bybit({}, topic="allLiquidation.ETHUSDT"),  # the topic's symbol is not read: the item's is
    _bybit({}, topic="allLiquidationX.BTCUSDT"),
    _bybit({}, ts=None),
    _bybit({}, ts=2**63),
    _bybit({"T": 2**63}, {}),
    _bybit({"v": 0.25}, {}),
    _bybit({}, data=[{"start": 1732400000000}]),
    _bybit({}, data=[]),
    _bybit({}, data={"T": 1}),
    _bybit({}).replace('"ts":1732400002000', '"ts":1732400002000,"data":5'),
    _bybit({}).replace('"type":"snapshot"', '"type":"snapshot","topic":"kline.1.BTCUSDT"'),
    _bybit({}).replace('"type":"snapshot"', '"type":"snapshot","data":[{"T":1}]'),
    '{"topic":"allLiquidation.BTCUSDT","data":[{"T":1732400001001,"s":"BTCUSDT","S":"Buy","v":"1","p":"1"}',
    '{"topic":"allLiquidation.BTCUSDT","data":[' + _DEEP + "]}",
]


@pytest.mark.parametrize("raw", _BYBIT_EDGES)
def test_bybit_frames_read_in_one_pass_give_what_the_general_path_gives(raw: str) -> None:
    _assert_same("bybit", raw)


# -- text that is not ASCII: printable frames are clean, the others go the general way ------------

_UNPRINTABLE = ["\u2028", "\u00a0", "\u200d", "\u0085", "\ufeff", "\U000e0001", "\x7f"]


@pytest.mark.parametrize("odd", ["", *_UNPRINTABLE])
@pytest.mark.parametrize("field", ["symbol", "side", "price", "other"])
def test_text_that_is_not_ascii_gives_what_the_general_path_gives(odd: str, field: str) -> None:
    """A raw (unescaped) character that is not printable, in the symbol or any other text field,
    next to a coin written in another script: the same events and drops both ways."""
    coin = f"币安{odd}人生"
    cases = {
        "okx": {
            "symbol": _okx({}, inst_id=f"{coin}-USDT-SWAP"),
            "side": _okx({"side": f"buy{odd}"}),
            "price": _okx({"bkPx": f"1{odd}3"}),
            "other": _okx({"ccy": f"x{odd}"}, inst_id="币安人生-USDT-SWAP"),
        },
        "gate": {
            "symbol": _gate({"contract": f"{coin}_USDT"}),
            "side": _gate({"size": f"-{odd}3"}),
            "price": _gate({"price": f"1{odd}3"}),
            "other": _gate({"x": f"x{odd}", "contract": "币安人生_USDT"}),
        },
        "bitget": {
            "symbol": _bitget({"symbol": f"{coin}USDT"}),
            "side": _bitget({"side": f"buy{odd}"}),
            "price": _bitget({"price": f"1{odd}3"}),
            "other": _bitget({"x": f"x{odd}", "symbol": "币安人生USDT"}),
        },
        "bybit": {
            "symbol": _bybit({"s": f"{coin}USDT"}),
            "side": _bybit({"S": f"Buy{odd}"}),
            "price": _bybit({"p": f"1{odd}3"}),
            "other": _bybit({"x": f"x{odd}", "s": "币安人生USDT"}),
        },
    }
    for exchange, raws in cases.items():
        raw = raws[field]
        assert odd in raw and "\\" not in raw  # written raw, not escaped
        _assert_same(exchange, raw)


# -- mutated captured frames, as in test_fuzz, through both paths ----------------------------------


@_fuzz
@given(raw=_mutated("okx"))
def test_mutated_okx_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("okx", raw)
    assert got == expected


@_fuzz
@given(raw=_mutated("gate"))
def test_mutated_gate_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("gate", raw)
    assert got == expected


@_fuzz
@given(raw=_mutated("bitget"))
def test_mutated_bitget_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("bitget", raw)
    assert got == expected


@_fuzz
@given(item=st.integers(0, 49), data=st.data())
def test_mutated_market_frames_give_what_the_general_path_gives(item: int, data: st.DataObject) -> None:
    """A whole-market frame of any venue with one value of one item changed to any JSON scalar."""
    exchange = data.draw(st.sampled_from(["okx", "gate", "bitget", "bybit"]))
    frame = json.loads(market_frames(_MARKET_KINDS[exchange], 50)[item][0])
    items = frame.get("data") or frame["result"]
    target = items[0]["details"][0] if exchange == "okx" else items[0]
    key = data.draw(st.sampled_from(sorted(target)))
    value = data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**65), max_value=2**65),
            st.floats(allow_nan=False, allow_infinity=False),
            st.from_regex(r"-?\d{1,20}(\.\d{0,20})?([eE][+-]?\d{1,3})?", fullmatch=True),
            st.text(max_size=6),
        )
    )
    mutated = copy.deepcopy(frame)
    mutated_items = mutated.get("data") or mutated["result"]
    (mutated_items[0]["details"][0] if exchange == "okx" else mutated_items[0])[key] = value
    got, expected = _both(exchange, _compact(mutated))
    assert got == expected
