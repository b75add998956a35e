"""Both dispatchers over mutated captured frames: nothing escapes, every event passes the sanity rules,
and the good items of a Bybit frame survive next to a mutated one.

The rules are restated here independently of collector.validation, so a bug there shows up. The
mutations include what a hostile venue sends: lone surrogates and control characters (written as
JSON escapes), symbols of thousands of letters, numbers in every notation `Decimal()` accepts.
"""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.connection import ExchangeAdapter, SessionEnded
from collector.health import StreamHealth
from common.events import Candle, Liquidation, Side, dedup_key
from common.symbols import valid_symbol
from tests.exchanges.harness import RECEIVED_MS, adapter_settings, frames

_FRAMES = {"binance": list(frames("binance").values()), "bybit": list(frames("bybit").values())}
_SIDES = {"binance": {"SELL": Side.LONG, "BUY": Side.SHORT}, "bybit": {"Buy": Side.LONG, "Sell": Side.SHORT}}
_MAX_AGE_MS = 3600 * 1000

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"-?\d{1,25}(\.\d{0,25})?([eE][+-]?\d{1,6})?", fullmatch=True),
    st.sampled_from(["SELL", "BUY", "Buy", "Sell", "FILLED", "NEW", "PARTIALLY_FILLED", "1m", "1", "0", "NaN", "-0"]),
    st.integers(min_value=RECEIVED_MS - 2 * _MAX_AGE_MS, max_value=RECEIVED_MS + 600_000),
    # hostile text: surrogates, control and format characters, other scripts' digits, huge symbols
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Nd"]), min_size=1, max_size=4),
    st.builds(lambda a, b: a + b, st.sampled_from(["BTC", "0.5", "Buy", "SELL", "1"]), st.text(max_size=3)),
    st.text(alphabet="AB", min_size=41, max_size=3000),
    st.sampled_from(["币安人生USDT", "龙虾USDT", "BTCUSDT\n", "BTC\x00USDT", " 1", "1_000", "١٢", "5E-1", "0.50"]),
    st.from_regex(r"(0|[1-9][0-9]{0,6})\.[0-9]{1,4}0{1,4}", fullmatch=True),
)
_values = st.one_of(
    _scalars, st.lists(_scalars, max_size=3), st.dictionaries(st.text(max_size=3), _scalars, max_size=3)
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


@st.composite
def _mutated(draw: st.DrawFn, exchange: str) -> str | bytes:
    frame = copy.deepcopy(draw(st.sampled_from(_FRAMES[exchange])))
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
    text = json.dumps(frame)
    form = draw(st.sampled_from(["text", "bytes", "truncated", "garbage", "text"]))
    if form == "bytes":
        return text.encode()
    if form == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if form == "garbage":
        return draw(st.one_of(st.binary(max_size=64), st.text(max_size=64)))
    return text


def _adapter(exchange: str, live: bool) -> ExchangeAdapter:
    cls = BinanceAdapter if exchange == "binance" else BybitAdapter
    url = {"binance": "wss://fstream.binance.com/market", "bybit": "wss://stream.bybit.com/v5/public/linear"}
    chosen = url[exchange] if live else "ws://127.0.0.1:1/x"
    s = adapter_settings()
    return cls(s, asyncio.Queue(), StreamHealth(exchange, s.source_for(chosen)), url=chosen)


def _finite_positive(d: Decimal) -> bool:
    return isinstance(d, Decimal) and d.is_finite() and d > 0


def _check_time(t: int, live: bool) -> None:
    assert type(t) is int and 1_500_000_000_000 <= t <= RECEIVED_MS + 300_000
    if live:
        assert RECEIVED_MS - t <= _MAX_AGE_MS


def _canonical(d: Decimal) -> bool:
    """No trailing fractional zeros, no exponent on integers: "0.5", "100", never "0.50" or "1E+2"."""
    plain = f"{d:f}"
    return not ("." in plain and plain.endswith("0")) and "E+" not in str(d)


def _venue_symbol(text: str) -> bool:
    """Letters of any script, ASCII digits and "-_.", 2 to 40 of them."""
    return 2 <= len(text) <= 40 and all(c.isalpha() or c in "0123456789-_." for c in text)


def _assert_sane(exchange: str, event: object, live: bool) -> None:
    assert isinstance(event, Liquidation | Candle)
    assert _venue_symbol(event.symbol) and valid_symbol(event.symbol), event.symbol
    if isinstance(event, Liquidation):
        assert event.exchange == exchange and event.received_ms == RECEIVED_MS
        assert _finite_positive(event.quantity) and _finite_positive(event.price)
        assert _canonical(event.quantity) and _canonical(event.price)
        plain = dedup_key(exchange, event.symbol, event.time_ms, event.side, event.price, event.quantity)
        # Bybit's key also holds the frame's `ts` and the item's index (twins in one frame stay two).
        assert (event.key == plain) is (exchange == "binance")
        assert event.value_usd == event.quantity * event.price and 0 < event.value_usd <= Decimal("1e10")
        assert _SIDES[exchange][event.raw_side] is event.side
        assert event.sampled is (exchange == "binance")
        assert event.source == ("live" if live else "test")
        _check_time(event.time_ms, live)
    else:
        assert isinstance(event, Candle) and event.exchange == exchange
        assert all(_finite_positive(v) for v in (event.open, event.high, event.low, event.close))
        assert all(_canonical(v) for v in (event.open, event.high, event.low, event.close, event.volume))
        assert event.low <= event.high
        assert all(v.is_finite() and v >= 0 for v in (event.volume, event.quote_volume))
        assert type(event.closed) is bool
        _check_time(event.open_ms, live)


def _run(exchange: str, raw: str | bytes, live: bool) -> None:
    adapter = _adapter(exchange, live)
    try:
        events = adapter.handle(raw, RECEIVED_MS)
    except SessionEnded:
        # Only a refused subscription may end a session; it is control flow the loop handles.
        assert exchange == "bybit" and json.loads(raw)["op"] == "subscribe"
        return
    for event in events:
        _assert_sane(exchange, event, live)
    assert "parse_error" not in adapter.health.drops  # items are refused by rule, not by accident


_fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(raw=_mutated("binance"), live=st.booleans())
def test_binance_parser_survives_mutations(raw: str | bytes, live: bool) -> None:
    _run("binance", raw, live)


@_fuzz
@given(raw=_mutated("bybit"), live=st.booleans())
def test_bybit_parser_survives_mutations(raw: str | bytes, live: bool) -> None:
    _run("bybit", raw, live)


@_fuzz
@given(raw=st.one_of(_mutated("binance"), _mutated("bybit")), exchange=st.sampled_from(["binance", "bybit"]))
def test_frames_of_the_other_venue_are_dropped_not_raised(raw: str | bytes, exchange: str) -> None:
    _run(exchange, raw, False)


@st.composite
def _five_with_one_mutated(draw: st.DrawFn) -> tuple[int, str]:
    """A five-item allLiquidation frame whose item `bad` had 1 to 3 fields changed or removed."""
    frame = copy.deepcopy(frames("bybit")["liquidation_five"])
    bad = draw(st.integers(0, 4))
    item = frame["data"][bad]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(item) + ["x"]))
        if key in item and draw(st.booleans()):
            del item[key]
        else:
            item[key] = draw(_values)
    return bad, json.dumps(frame, ensure_ascii=draw(st.booleans()))


@_fuzz
@given(case=_five_with_one_mutated(), live=st.booleans())
def test_good_items_survive_next_to_a_mutated_one(case: tuple[int, str], live: bool) -> None:
    bad, raw = case
    adapter = _adapter("bybit", live)
    events = adapter.handle(raw, RECEIVED_MS)  # nothing escapes
    for event in events:
        _assert_sane("bybit", event, live)
    good = frames("bybit")["liquidation_five"]
    expected = _adapter("bybit", live).handle(json.dumps(good), RECEIVED_MS)
    del expected[bad]  # the others keep their index in `data`, so their keys too
    assert len(expected) == 4
    # The mutated item gives one sane event or one counted drop, never a parser bug; the others
    # give exactly what they give without it.
    dropped = sum(adapter.health.drops.values())
    assert dropped in (0, 1) and len(events) == 5 - dropped and "parse_error" not in adapter.health.drops
    assert (events[:bad] + events[bad + 1 :] if dropped == 0 else events) == expected


def test_unmutated_frames_still_produce_events() -> None:
    # Guards the fuzz tests against passing because nothing gets through at all.
    for exchange in ("binance", "bybit"):
        adapter = _adapter(exchange, False)
        events = [e for f in _FRAMES[exchange] if "op" not in f for e in adapter.handle(json.dumps(f), RECEIVED_MS)]
        for event in events:
            _assert_sane(exchange, event, False)
        assert len(events) >= 8
