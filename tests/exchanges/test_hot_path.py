"""The hot path's shortcuts give exactly what the plain code gives: dedup keys, JSON, Redis members."""

from __future__ import annotations

import decimal
import hashlib
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.storage.redis_live import fast_member
from collector.validation import Rejected, parse_json
from common.events import Liquidation, Side, dedup_key, new_liquidation
from common.live_view import encode_liquidation

# Amounts as venues and replays write them: trailing zeros, exponents, integers, long fractions.
_AMOUNT_TEXT = st.one_of(
    st.decimals(min_value=Decimal("1e-18"), max_value=Decimal("1e15"), allow_nan=False, allow_infinity=False),
    st.builds(
        lambda digits, exp: Decimal(f"{digits}E{exp}"),
        st.integers(min_value=1, max_value=10**12),
        st.integers(min_value=-20, max_value=6),
    ),
    st.sampled_from(["0.250", "0.25", "100", "100.0", "1E+2", "1.50E-7", "97012.50", "0.000001000"]).map(Decimal),
    st.integers(min_value=1, max_value=10**34).map(lambda n: Decimal(f"{n}E-20")),  # > 28 digits (scaleb would round)
    st.integers(min_value=10**100, max_value=10**130).map(lambda n: Decimal(f"{n}E-110")),  # > 100 digits
)


def _reference_key(exchange: str, symbol: str, time_ms: int, side: str, price: Decimal, quantity: Decimal) -> int:
    """The key's definition, written the slow and obvious way (bench/synth.py relies on it too)."""
    # normalize() rounds to its context's precision (28 digits by default; a fixed 100 failed on a
    # 101-digit quantity that hypothesis drew): only the largest precision leaves every amount exact
    exact = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    text = f"{exchange}|{symbol}|{time_ms}|{side}|{price.normalize(exact):f}|{quantity.normalize(exact):f}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True) >> 1


@given(
    price=_AMOUNT_TEXT,
    quantity=_AMOUNT_TEXT,
    time_ms=st.integers(min_value=0, max_value=2**42),
    side=st.sampled_from(list(Side)),
)
def test_dedup_key_equals_its_definition(price: Decimal, quantity: Decimal, time_ms: int, side: Side) -> None:
    key = dedup_key("bybit", "BTCUSDT", time_ms, side, price, quantity)
    assert key == _reference_key("bybit", "BTCUSDT", time_ms, side, price, quantity)
    assert -(2**62) <= key < 2**62
    assert key == dedup_key("bybit", "BTCUSDT", time_ms, str(side), price, quantity)  # Side or its text


def test_dedup_key_ignores_trailing_zeros_and_notation() -> None:
    base = dedup_key("bybit", "BTCUSDT", 1732400000321, Side.LONG, Decimal("97012.50"), Decimal("0.250"))
    for price, qty in [("97012.5", "0.25"), ("97012.500000", "0.2500"), ("9.70125E+4", "2.5E-1")]:
        assert dedup_key("bybit", "BTCUSDT", 1732400000321, Side.LONG, Decimal(price), Decimal(qty)) == base
    assert dedup_key("bybit", "BTCUSDT", 1732400000321, Side.SHORT, Decimal("97012.5"), Decimal("0.25")) != base
    assert dedup_key("bybit", "BTCUSDT", 1732400000321, Side.LONG, Decimal("97012.5"), Decimal("0.26")) != base


_FRAMES = [
    '{"topic":"allLiquidation.BTCUSDT","data":[{"T":1732400000321,"s":"BTCUSDT","S":"Buy","v":"0.250","p":"97012.50"}]}',
    '  {"a": 1}  ',
    '{"a": 1}\n',
    '{"a": NaN, "b": [1.5, -2e3, true, null, "\\u00fc"]}',
    "[1, 2]",
    '"text"',
    "\ufeff{}",
    "{",
    '{"a": 1} {"b": 2}',
    "",
    "nul",
    "[" * 100_000 + "]" * 100_000,
]


@pytest.mark.parametrize("raw", _FRAMES + [f.encode() for f in _FRAMES[:4]])
def test_parse_json_is_json_loads(raw: str | bytes) -> None:
    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        with pytest.raises(Rejected) as rejected:
            parse_json(raw)
        assert rejected.value.reason == "bad_json"
        return
    got = parse_json(raw)
    # NaN != NaN: compare the canonical dumps
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


@given(
    quantity=_AMOUNT_TEXT,
    price=_AMOUNT_TEXT,
    time_ms=st.integers(min_value=0, max_value=2**42),
    sampled=st.booleans(),
)
def test_fast_member_equals_the_codec_for_any_notation(
    quantity: Decimal, price: Decimal, time_ms: int, sampled: bool
) -> None:
    ev = Liquidation(
        exchange="binance",
        symbol="ETHUSDT",
        side=Side.SHORT,
        quantity=quantity,
        price=price,
        value_usd=quantity * price,
        time_ms=time_ms,
        received_ms=time_ms,
        raw_side="BUY",
        source="test",
        sampled=sampled,
    )
    assert fast_member(ev) == encode_liquidation(ev)


def test_the_written_out_constructor_is_the_one_dataclass_would_write() -> None:
    """`Liquidation.__init__` is written by hand (no `__post_init__` call per event): same parameters,
    defaults and fields as the generated one, the key computed when left 0, `replace` still works."""
    import dataclasses
    import inspect

    @dataclasses.dataclass(slots=True)
    class Generated:
        exchange: str
        symbol: str
        side: Side
        quantity: Decimal
        price: Decimal
        value_usd: Decimal
        time_ms: int
        received_ms: int
        raw_side: str
        source: str
        sampled: bool
        key: int = 0
        cascade_id: int | None = None
        risk_score: int | None = None

    assert [f.name for f in dataclasses.fields(Liquidation)] == [f.name for f in dataclasses.fields(Generated)]
    assert inspect.signature(Liquidation).parameters == inspect.signature(Generated).parameters
    args = ("bybit", "BTCUSDT", Side.LONG, Decimal("0.5"), Decimal("100000"), Decimal("50000"), 1732400000321, 1)
    made = Liquidation(*args, "Buy", "test", False)
    assert made.key == dedup_key("bybit", "BTCUSDT", 1732400000321, Side.LONG, Decimal("100000"), Decimal("0.5"))
    assert made.cascade_id is None and made.risk_score is None
    assert Liquidation(*args, "Buy", "test", False, 7, 3, 80).key == 7
    assert dataclasses.replace(made, quantity=Decimal("0.50"), key=0) == made  # trailing zeros: one key
    moved = dataclasses.replace(made, time_ms=1732400000322, key=0)
    assert moved.key == dedup_key("bybit", "BTCUSDT", 1732400000322, Side.LONG, Decimal("100000"), Decimal("0.5"))
    assert dataclasses.astuple(made)[:11] == dataclasses.astuple(Generated(*args, "Buy", "test", False))[:11]
    fast = new_liquidation(*args, "Buy", "test", False, made.key)  # the adapters' way: every field set
    assert fast == made and type(fast) is Liquidation
    assert [getattr(fast, f.name) for f in dataclasses.fields(Liquidation)] == list(dataclasses.astuple(made))
    fast.cascade_id = 9
    assert dataclasses.replace(fast, key=0).key == made.key and dataclasses.replace(fast).cascade_id == 9
