"""The typed fast path of both dispatchers (issue #10) gives exactly what the general path gives:
the same events with the same keys, the same drops with the same reasons, frame by frame.

The general path is forced by telling the adapter module that no frame is clean (`clean_frame`):
the fast path only reads clean frames, and on a clean frame `check_texts` finds nothing, so the
forced run is what the dispatcher did before the fast path existed.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import blake2b
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_parse import market_frames
from collector.exchanges import binance, bybit
from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.connection import ExchangeAdapter
from collector.health import StreamHealth
from collector.validation import Rejected, amount_text, optional_amount_text, optional_price_text, price_text
from common.events import Side, dedup_key_of_texts
from tests.exchanges.harness import RECEIVED_MS, adapter_settings, frames

_MODULES = {"binance": binance, "bybit": bybit}
_CLASSES: dict[str, type[ExchangeAdapter]] = {"binance": BinanceAdapter, "bybit": BybitAdapter}


def _adapter(exchange: str) -> Any:
    return _CLASSES[exchange](
        adapter_settings(), asyncio.Queue(), StreamHealth(exchange, "test"), url="ws://127.0.0.1:1/x"
    )


@contextmanager
def _general_path(exchange: str) -> Iterator[None]:
    with mock.patch.object(_MODULES[exchange], "clean_frame", lambda raw: False):
        yield


def _both(exchange: str, raw: str | bytes) -> tuple[Any, Any]:
    """(events, drops) of the dispatcher as it is and of the general path alone."""
    fast = _adapter(exchange)
    got = fast.handle(raw, RECEIVED_MS)
    general = _adapter(exchange)
    with _general_path(exchange):
        expected = general.handle(raw, RECEIVED_MS)
    return (got, dict(fast.health.drops)), (expected, dict(general.health.drops))


@pytest.mark.parametrize(
    ("exchange", "kind"),
    [
        ("binance", "binance forceOrder"),
        ("binance", "binance kline_1m"),
        ("bybit", "bybit allLiquidation"),
        ("bybit", "bybit kline.1"),
    ],
)
def test_whole_market_frames_give_what_the_general_path_gives(exchange: str, kind: str) -> None:
    market = market_frames(kind, 1500)
    fast, general = _adapter(exchange), _adapter(exchange)
    for raw, count in market:
        got = fast.handle(raw, RECEIVED_MS)
        with _general_path(exchange):
            expected = general.handle(raw, RECEIVED_MS)
        assert got == expected and len(got) == count, raw
    assert not fast.health.drops and not general.health.drops


def test_the_fast_path_reads_the_usual_frames() -> None:
    """Guards the equality tests against passing because nothing takes the fast path."""
    with (
        mock.patch.object(binance, "decode", side_effect=AssertionError("general path")),
        mock.patch.object(bybit, "decode", side_effect=AssertionError("general path")),
    ):
        for exchange, kind in (("binance", "binance forceOrder"), ("bybit", "bybit allLiquidation")):
            adapter = _adapter(exchange)
            for raw, count in market_frames(kind, 50):
                assert len(adapter.handle(raw, RECEIVED_MS)) == count
                assert len(adapter.handle(raw.encode(), RECEIVED_MS)) == count


def _order(**fields: Any) -> str:
    frame = copy.deepcopy(frames("binance")["force_order_sell"])
    frame["data"]["o"].update(fields)
    return json.dumps(frame, separators=(",", ":"))


def _items(*items: dict[str, Any], ts: Any = 1732400002000) -> str:
    good = {"T": 1732400001001, "s": "BTCUSDT", "S": "Buy", "v": "0.250", "p": "97012.50"}
    frame = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": ts, "data": [dict(good, **i) for i in items]}
    return json.dumps(frame, separators=(",", ":"))


_DEEP = "[" * 50_000 + "]" * 50_000


@pytest.mark.parametrize(
    "raw",
    [
        _order(),
        _order(z="0", ap="0"),  # no fill fields: q and p
        _order(z="0.000", X="EXPIRED"),
        _order(z="0.01400", ap="97354.600"),
        _order(s="BTCUSD_PERP"),  # COIN-M: face value
        _order(s="WEIRD"),  # no USD quote
        _order(s="币安人生USDT"),  # not ASCII but printable: clean
        _order(s="币安人生\u2028USDT"),  # a raw line separator: not clean, the general path names it
        _order(X="FILLED\u00a0"),  # a raw no-break space in another field: bad_text
        _order(S="HOLD"),
        _order(X="NEW", z="0"),
        _order(ap="5E-1"),
        _order(ap="NaN", p="-1"),
        _order(z="200000", ap="97000"),
        _order(T=RECEIVED_MS + 400_000),
        _order(T=1732400000119.0),
        _order(T=True),
        _order(T=10**30),
        _order(ap=None),
        _order(z=None, ap=None),
        _order(s="btcusdt"),
        _order(x=_DEEP),
        _order(x=float("nan")),  # NaN: JSON the typed decoder refuses, json.loads takes
        _order()[:-1] + ',"x":' + _DEEP + "}",  # deeper than any decoder goes
        _order().replace('"s":"BTCUSDT"', '"s":"BTCUSDT","s":"ETHUSDT"'),  # the last one wins
        _order().replace('"e":"forceOrder"', '"e":"kline","e":"forceOrder"'),
        _order().replace('"e":"forceOrder"', '"e":"forceOrder","e":"kline"'),
        _order().replace('"stream"', '"x"'),  # a raw-stream payload
        json.dumps(frames("binance")["kline_open"], separators=(",", ":")),
        json.dumps(frames("binance")["kline_open"]).replace('"1m"', '"5m"'),
        json.dumps(frames("binance")["kline_open"]).replace('"97410.0"', '"97000.0"'),  # low above high
        '{"result":null,"id":1}',
        '{"stream":"x","data":null,"e":"forceOrder"}',
        '{"stream":"x","data":{"e":"forceOrder","o":null}}',
        '{"stream":"x","data":{"e":"forceOrder","o":{}}}',
        "",
        "[]",
    ],
)
def test_binance_edge_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("binance", raw)
    assert got == expected
    got, expected = _both("binance", raw.encode())
    assert got == expected


@pytest.mark.parametrize(
    "raw",
    [
        _items({}),
        _items({}, {}, {}),  # twins: one key each, by index
        _items({}, ts=None),
        _items({}, ts="1732400002000"),
        _items({}, ts=True),
        _items({}, ts=1732400002000.5),
        _items({}, ts=10**30),
        _items({"v": "0.50"}, {"v": "0.500"}, {"v": "5E-1"}),
        _items({"s": "BTCPERP"}, {"s": "WEIRD"}, {"s": "1000PEPEUSDT", "p": "0.0125000"}),
        _items({"S": "Hold"}, {"v": "NaN"}, {"T": 12}),
        _items({"T": 1732400001001.0}, {}),  # one item of a wrong type: the general way, item by item
        _items({"v": 0.25}, {}),
        _items({"x": _DEEP}, {}),
        _items({"s": "币安人生USDT"}),
        '{"topic":"allLiquidation.BTCUSDT","data":{"T":1}}',
        '{"topic":"allLiquidation.BTCUSDT"}',
        '{"topic":"allLiquidation.BTCUSDT","data":[7]}',
        '{"topic":"allLiquidation.BTCUSDT","data":[]}',
        '{"topic":"kline.5.BTCUSDT","data":[]}',
        '{"topic":"orderbook.50.BTCUSDT","data":{}}',
        '{"topic":"kline.1.BTCUSDT","topic":"allLiquidation.BTCUSDT","data":[]}',
        _items({}).replace('"topic":"allLiquidation.BTCUSDT"', '"topic":"allLiquidation.BTCUSDT","topic":"x"'),
        json.dumps(frames("bybit")["kline_open"], separators=(",", ":")),
        json.dumps(frames("bybit")["kline_open"]).replace('"kline.1.BTCUSDT"', '"kline.1.btcusdt"'),
        json.dumps(frames("bybit")["kline_open"]).replace('"confirm": false', '"confirm": 0'),
        json.dumps(frames("bybit")["kline_open"]).replace('"97410"', '"97000"'),  # low above high
        json.dumps(frames("bybit")["pong"]),
        '{"op":"auth","success":true}',
    ],
)
def test_bybit_edge_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("bybit", raw)
    assert got == expected
    got, expected = _both("bybit", raw.encode())
    assert got == expected


def test_a_parser_bug_in_one_fast_item_costs_that_item_only(monkeypatch: pytest.MonkeyPatch) -> None:
    original = bybit.BybitLiquidation.to_event

    def buggy(self: bybit.BybitLiquidation, *args: Any) -> Any:
        if self.s == "ETHUSDT":
            raise ValueError("boom")
        return original(self, *args)

    monkeypatch.setattr(bybit.BybitLiquidation, "to_event", buggy)
    adapter = _adapter("bybit")
    events = adapter.handle(_items({}, {"s": "ETHUSDT"}, {"T": 1732400001003}), RECEIVED_MS)
    assert [e.time_ms for e in events] == [1732400001001, 1732400001003]
    assert adapter.health.drops == {"parse_error": 1}


# -- mutated frames, as in test_fuzz, through both paths -----------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(st.characters(codec="ascii", exclude_characters="\\\x7f"), max_size=8),
    st.from_regex(r"-?\d{1,20}(\.\d{0,20})?([eE][+-]?\d{1,3})?", fullmatch=True),
    st.sampled_from(["SELL", "BUY", "Buy", "Sell", "FILLED", "NEW", "EXPIRED", "1m", "1", "0", "0.000", "NaN", "-0"]),
    st.sampled_from(["BTCUSDT", "BTCUSD_PERP", "BTCPERP", "WEIRD", "0.50", "5E-1", "00.5", " 1", "1_000"]),
    st.integers(min_value=RECEIVED_MS - 600_000, max_value=RECEIVED_MS + 600_000),
)
_values = st.one_of(
    _scalars, st.lists(_scalars, max_size=2), st.dictionaries(st.text(max_size=2), _scalars, max_size=2)
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


@st.composite
def _mutated(draw: st.DrawFn, exchange: str) -> str:
    """A captured frame with 1 to 3 values changed or removed, written compactly as the venues do."""
    frame = copy.deepcopy(draw(st.sampled_from(list(frames(exchange).values()))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(frame)
        if not paths:
            break
        *parent_path, key = draw(st.sampled_from(paths))
        parent = frame
        for step in parent_path:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = draw(_values)
    return json.dumps(frame, separators=(",", ":"))


_fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(raw=_mutated("binance"))
def test_mutated_binance_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("binance", raw)
    assert got == expected


@_fuzz
@given(raw=_mutated("bybit"))
def test_mutated_bybit_frames_give_what_the_general_path_gives(raw: str) -> None:
    got, expected = _both("bybit", raw)
    assert got == expected


# -- the helpers the fast path uses ---------------------------------------------------------------


@given(
    st.one_of(
        st.from_regex(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,12})?", fullmatch=True),
        st.sampled_from(["0", "0.000", "", " 1", "5E-1", "NaN", "-1", "1" * 29, "0.0000000000000000001"]),
    )
)
def test_remembered_prices_are_amount_texts(text: str) -> None:
    for remembered, plain in ((price_text, amount_text), (optional_price_text, optional_amount_text)):
        try:
            expected: Any = plain(text)
        except Rejected as refused:
            with pytest.raises(Rejected) as again:
                remembered(text)
            assert again.value.reason == refused.reason
            continue
        for _ in range(2):  # computed, then remembered
            got = remembered(text)
            assert got == expected and (got is None or str(got[1]) == str(expected[1]))


def test_the_price_memo_is_bounded_and_keeps_no_refusal() -> None:
    from collector import validation

    for n in range(validation._PRICES_MAX + 10):
        price_text(f"{n + 1}.50")
    assert len(validation._PRICES) <= validation._PRICES_MAX
    with pytest.raises(Rejected):
        price_text("1" * 40)
    assert "1" * 40 not in validation._PRICES


def _key_as_defined(exchange: str, symbol: str, time_ms: int, side: str, price: str, qty: str, extra: str) -> int:
    text = "|".join((exchange, symbol, str(time_ms), side, price, qty))
    if extra:
        text = f"{text}|{extra}"
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big", signed=True) >> 1


@given(
    symbol=st.text(max_size=12),
    time_ms=st.integers(min_value=-(2**70), max_value=2**70),
    side=st.sampled_from([Side.LONG, Side.SHORT, "LONG", "x"]),
    price=st.text(max_size=10),
    qty=st.text(max_size=10),
    extra=st.text(max_size=16),
)
def test_dedup_key_of_texts_is_unchanged(
    symbol: str, time_ms: int, side: str, price: str, qty: str, extra: str
) -> None:
    for text in (symbol, price, qty, extra):
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate: both refuse it alike
            with pytest.raises(UnicodeEncodeError):
                dedup_key_of_texts("bybit", symbol, time_ms, side, price, qty, extra)
            return
    got = dedup_key_of_texts("bybit", symbol, time_ms, side, price, qty, extra)
    assert got == _key_as_defined("bybit", symbol, time_ms, side, price, qty, extra)


def test_known_keys_do_not_move() -> None:
    """Stored keys: values computed by the code before the fast path, as rows already carry them."""
    assert dedup_key_of_texts("binance", "BTCUSDT", 1732400000119, Side.LONG, "97354.6", "0.014") == 3173423459522988877
    assert (
        dedup_key_of_texts("bybit", "币安人生USDT", 1732400001001, Side.SHORT, "0.2139", "1200", "1732400002000#3")
        == -581061475636960884
    )
