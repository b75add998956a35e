"""The C twins of the parse hot path (common/_events_native.c, collector/_validation_native.c) give
exactly what their Python functions give, the rule: the same key, the same object, the same
(canonical text, Decimal), the same time, or the same `Rejected` with the same reason and text.

CI builds the twins (`make venv-dev` runs scripts/build_native.py), so the first test fails when the
build is missing or broken rather than letting the suite test Python twice. The last one runs the
collector's parse without them, as a host without a compiler would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import validation
from collector.exchanges import binance, bitget, bybit, gate, okx
from collector.validation import Rejected
from common import events
from common.events import Liquidation, Side

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_732_400_000_000


def _outcome(call: Callable[[], Any]) -> Any:
    """What a call gives, or the exception it raises as (type, reason, text)."""
    try:
        return call()
    except Rejected as exc:
        return ("Rejected", exc.reason, str(exc))
    except Exception as exc:  # the same TypeError or UnicodeEncodeError from both
        return (type(exc).__name__, str(exc))


def test_the_compiled_twins_are_built_and_in_use() -> None:
    assert events.NATIVE and validation.NATIVE, "run scripts/build_native.py (make venv-dev does)"
    assert events.dedup_key_of_texts is not events.python_dedup_key_of_texts
    assert validation.amount_text is not validation.python_amount_text
    assert events.canonical_text is not events.python_canonical_text
    assert okx.canonical_text is events.canonical_text
    for module in (binance, bybit, okx, gate, bitget):  # the adapters imported the twins, not the rules
        assert module.dedup_key_of_texts is events.dedup_key_of_texts
        assert module.new_liquidation is events.new_liquidation


# ---- the dedup key ----

_TEXT = st.text(max_size=12) | st.text(min_size=100, max_size=400)  # one block, and several


@given(
    parts=st.lists(_TEXT, min_size=5, max_size=5),
    time_ms=st.integers(-(2**70), 2**70) | st.booleans(),
    side=st.sampled_from([Side.LONG, Side.SHORT, "LONG", "x", 5]),
    extra=st.none() | _TEXT | st.integers(0, 9),
)
def test_the_key_is_the_rules_key(parts: list[str], time_ms: int, side: Any, extra: Any) -> None:
    exchange, symbol, price, quantity, _ = parts
    args: tuple[Any, ...] = (exchange, symbol, time_ms, side, price, quantity)
    if extra is not None:
        args += (extra,)
    got = _outcome(lambda: events.dedup_key_of_texts(*args))
    assert got == _outcome(lambda: events.python_dedup_key_of_texts(*args))


@pytest.mark.parametrize("length", [0, 1, 111, 127, 128, 129, 255, 256, 257, 1000])
def test_the_key_is_blake2b_at_every_block_boundary(length: int) -> None:
    quantity = "7" * length
    text = f"binance|BTCUSDT|{NOW}|LONG|97000.1|{quantity}"
    digest = blake2b(text.encode(), digest_size=8).digest()
    expected = int.from_bytes(digest, "big", signed=True) >> 1
    assert events.dedup_key_of_texts("binance", "BTCUSDT", NOW, Side.LONG, "97000.1", quantity) == expected


def test_the_key_takes_keywords_and_refuses_what_the_rule_refuses() -> None:
    args = ("bybit", "BTCUSDT", NOW, Side.SHORT, "1", "2")
    assert events.dedup_key_of_texts(*args, extra="x#1") == events.python_dedup_key_of_texts(*args, "x#1")
    for bad in [args[:5], (*args, "a", "b"), ("bybit", None, NOW, "LONG", "1", "2")]:
        assert _outcome(lambda bad=bad: events.dedup_key_of_texts(*bad)) == _outcome(
            lambda bad=bad: events.python_dedup_key_of_texts(*bad)
        )
        assert isinstance(_outcome(lambda bad=bad: events.dedup_key_of_texts(*bad)), tuple)


# ---- the Liquidation constructor ----


@given(values=st.lists(st.integers() | st.text(max_size=5) | st.decimals(allow_nan=False), min_size=12, max_size=12))
def test_the_constructor_builds_the_rules_object(values: list[Any]) -> None:
    got = events.new_liquidation(*values)
    expected = events.python_new_liquidation(*values)
    assert type(got) is Liquidation
    assert got == expected
    for name in Liquidation.__slots__:  # identical objects, not equal ones: nothing converted
        assert getattr(got, name) is getattr(expected, name)


def test_the_constructor_falls_back_on_keywords_and_wrong_arity() -> None:
    args = ("binance", "BTCUSDT", Side.LONG, Decimal(1), Decimal(2), Decimal(2), NOW, NOW, "SELL", "live", True)
    assert events.new_liquidation(*args, key=5) == events.python_new_liquidation(*args, key=5)
    assert _outcome(lambda: events.new_liquidation(*args)) == _outcome(lambda: events.python_new_liquidation(*args))
    assert _outcome(lambda: events.new_liquidation(*args))[0] == "TypeError"
    assert events.new_liquidation(*args, 9) == Liquidation(*args, key=9)


# ---- canonical_text ----


class _Amount(Decimal):
    """A Decimal subclass: the twin leaves it to the rule."""


@given(
    amount=st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(min_value=Decimal("1e-30"), max_value=Decimal("1e30"), places=30)
    | st.integers(-(10**30), 10**30).map(Decimal)
    | st.builds(lambda m, e: Decimal(m).scaleb(e), st.integers(-(10**6), 10**6), st.integers(-40, 40))
)
def test_canonical_text_is_the_rules(amount: Decimal) -> None:
    assert _outcome(lambda: events.canonical_text(amount)) == _outcome(lambda: events.python_canonical_text(amount))


@pytest.mark.parametrize(
    "amount",
    [
        Decimal("0.250"),
        Decimal("100"),
        Decimal("1E+2"),
        Decimal("2.5E-1"),
        Decimal("0.000"),
        Decimal("-0.0"),
        Decimal("1E-7"),
        Decimal("5916.0"),
        Decimal("0"),
        _Amount("1.50"),
        5,
        2.5,
        "0.50",
        None,
    ],
)
def test_canonical_text_is_the_rules_at_every_edge(amount: Any) -> None:
    assert _outcome(lambda: events.canonical_text(amount)) == _outcome(lambda: events.python_canonical_text(amount))
    assert _outcome(lambda: events.canonical_text(amount=amount)) == _outcome(lambda: events.canonical_text(amount))


# ---- amounts, prices, times ----

_NUMBER = (
    st.integers(-(10**17), 10**17).map(str)
    | st.decimals(min_value=Decimal("1e-20"), max_value=Decimal("1e16"), allow_nan=False, places=22).map(
        lambda d: f"{d:f}"
    )
    | st.builds(
        lambda d, zeros: f"{d:f}" + ("0" * zeros if "." in f"{d:f}" else ""),
        st.decimals(0, 10**6, places=8),
        st.integers(0, 5),
    )
    | st.text(alphabet="0123456789.-+eE _²١０", max_size=30)
    | st.text(max_size=8)
)


# Each side of every line the twin draws: digits of the whole part, zeros after the dot, the length.
_EDGES = [
    "999999999999999",
    "9999999999999999",
    "1000000000000000",
    "1000000000000000.0",
    "1000000000000000.5",
    "999999999999999.99999999999",
    "999999999999999.999999999999",
    "0.000000000000000001",
    "0.0000000000000000010",
    "0.0000000000000000001",
    "0.00000000000000000100000000",
    "0",
    "0.0",
    "00",
    "01",
    "01.5",
    "1.",
    ".1",
    "1..0",
    "1.0.0",
    "",
    "1e5",
    "5E-1",
    "-1",
    "+1",
    " 1",
    "1 ",
    "1_000",
    "١",
    "0.50",
    "5916.0",
    "5916.000",
    "100",
]


@pytest.mark.parametrize("text", _EDGES)
def test_amount_text_is_the_rules_at_every_edge(text: str) -> None:
    _same_amount(text)
    _same_price(text)


@given(text=_NUMBER)
def test_amount_text_is_the_rules(text: str) -> None:
    _same_amount(text)


def _same_amount(text: str) -> None:
    got = _outcome(lambda: validation.amount_text(text))
    expected = _outcome(lambda: validation.python_amount_text(text))
    assert got == expected
    if got and type(got[1]) is Decimal:
        assert type(got[0]) is str and str(got[1]) == str(expected[1])


@given(text=_NUMBER)
def test_price_text_is_the_rules_and_remembers_only_what_it_accepts(text: str) -> None:
    _same_price(text)


def _same_price(text: str) -> None:
    validation._PRICES.clear()
    got = _outcome(lambda: validation.price_text(text))
    remembered = dict(validation._PRICES)
    validation._PRICES.clear()
    assert got == _outcome(lambda: validation.python_price_text(text))
    assert remembered == dict(validation._PRICES)
    assert _outcome(lambda: validation.price_text(text)) == got  # from the memo now, when accepted


def test_price_text_starts_the_memo_over_when_full() -> None:
    validation._PRICES.clear()
    for i in range(validation._PRICES_MAX):
        validation._PRICES[f"x{i}"] = ("1", Decimal(1))
    assert validation.price_text("97000.10") == ("97000.1", Decimal("97000.1"))
    assert validation._PRICES == {"97000.10": ("97000.1", Decimal("97000.1"))}
    validation._PRICES.clear()


_TIME = st.integers(-(2**70), 2**70) | st.integers(NOW - 10**7, NOW + 10**6) | st.booleans()
_AGE = st.none() | st.integers(-10, 10**8) | st.just(2**80) | st.just("60000")


_TIME_EDGES = [
    (validation.MIN_TIME_MS - 1, NOW, None),
    (validation.MIN_TIME_MS, NOW, None),
    (validation.MIN_TIME_MS, validation.MIN_TIME_MS - 1, None),
    (NOW + validation.FUTURE_TOLERANCE_MS, NOW, None),
    (NOW + validation.FUTURE_TOLERANCE_MS + 1, NOW, None),
    (NOW - 60_000, NOW, 60_000),
    (NOW - 60_001, NOW, 60_000),
    (NOW, NOW, 0),
    (NOW, NOW, -1),
    (NOW + 1, NOW, -1),
    (2**52, 2**52, None),
    (2**52 + 1, 2**52 + 1, None),
    (2**63 - 1, 2**63 - 1, None),
    (2**63, 2**63, None),
    (NOW, 2**63, 2**64),
]


@pytest.mark.parametrize(("time_ms", "received_ms", "max_age_ms"), _TIME_EDGES)
def test_the_time_checks_are_the_rules_at_every_edge(time_ms: int, received_ms: int, max_age_ms: int | None) -> None:
    _same_time(time_ms, received_ms, max_age_ms)
    for text in (str(time_ms), f"0{time_ms}", f"00{time_ms}"):
        _same_ms_text(text, received_ms, max_age_ms)


@given(time_ms=_TIME, received_ms=_TIME | st.just(NOW), max_age_ms=_AGE)
def test_check_time_is_the_rules(time_ms: int, received_ms: int, max_age_ms: Any) -> None:
    _same_time(time_ms, received_ms, max_age_ms)


def _same_time(time_ms: int, received_ms: int, max_age_ms: Any) -> None:
    got = _outcome(lambda: validation.check_time(time_ms, received_ms, max_age_ms))
    assert got == _outcome(lambda: validation.python_check_time(time_ms, received_ms, max_age_ms))


@given(
    text=_TIME.map(str) | st.text(alphabet="0123456789١ -+", max_size=20) | st.just("0" * 3 + str(NOW)),
    received_ms=st.just(NOW) | _TIME,
    max_age_ms=_AGE,
)
def test_check_ms_text_is_the_rules(text: str, received_ms: int, max_age_ms: Any) -> None:
    _same_ms_text(text, received_ms, max_age_ms)


def _same_ms_text(text: str, received_ms: int, max_age_ms: Any) -> None:
    got = _outcome(lambda: validation.check_ms_text(text, "ts", received_ms, max_age_ms))
    assert got == _outcome(lambda: validation.python_check_ms_text(text, "ts", received_ms, max_age_ms))


def test_the_twins_take_keywords() -> None:
    assert validation.amount_text(text="0.50") == ("0.5", Decimal("0.5"))
    assert validation.check_time(NOW, received_ms=NOW, max_age_ms=None) == NOW
    assert validation.check_ms_text(str(NOW), "ts", NOW, max_age_ms=10) == NOW


# ---- without the build ----

_WITHOUT_TWINS = """
import json, sys
sys.modules["common._events_native"] = None  # what an unbuilt tree gives: ImportError
sys.modules["collector._validation_native"] = None
from collector import validation
from common import events
from tests.exchanges.test_native_twins import parse_sample
print(json.dumps([events.NATIVE, validation.NATIVE, parse_sample()]))
"""


def parse_sample() -> list[Any]:
    """One liquidation of each of two venues through their adapters: what matters of the events."""
    from bench.bench_parse import bench_adapter, bench_settings

    frames = {
        binance.BinanceAdapter: {
            "stream": "btcusdt@forceOrder",
            "data": {
                "e": "forceOrder",
                "E": NOW + 4,
                "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "97354.60"}
                | {"ap": "97354.60", "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1732400000119},
            },
        },
        okx.OkxAdapter: {
            "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
            "data": [
                {
                    "instId": "BTC-USDT-SWAP",
                    "details": [{"side": "buy", "sz": "3", "bkPx": "97000.10", "ts": str(NOW), "posSide": "net"}],
                }
            ],
        },
    }
    got = []
    for cls, frame in frames.items():
        adapter = bench_adapter(cls, bench_settings())  # OKX's contract sizes from the bench's instrument list
        for event in adapter.handle(json.dumps(frame), NOW + 50):
            got.append([event.symbol, str(event.side), str(event.quantity), str(event.value_usd), event.key])
    return got


def test_the_collector_parses_the_same_without_the_build() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TWINS], capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 0, done.stderr
    native, validation_native, sample = json.loads(done.stdout)
    assert (native, validation_native) == (False, False)
    assert sample == parse_sample()
    assert len(sample) == 2 and sample[0][4] == 3173423459522988877  # the key test_parse_fast pins
