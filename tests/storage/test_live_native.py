"""The C twin of the live view's encoder (common/_live_native.c) gives exactly what
`python_write_argv`, the rule, gives: the same two texts byte for byte and the same count, or the
same exception; batches it does not take itself (names JSON would escape, amounts with an exponent,
other types) go whole to the Python function. Pure: no Redis here (test_live_view.py writes the
texts through the real script).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, localcontext
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.storage import redis_live
from common import live_scripts
from common.events import Liquidation, Side
from common.live_scripts import KEEP_MS, python_write_argv, write_argv
from common.live_view import BUCKET_MS, PLAIN, limbs_to_decimal

NOW = 1_732_400_000_000


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # the same error from both
        return (type(exc).__name__, str(exc))


@contextmanager
def _counted_twin() -> Iterator[list[int]]:
    """The C encoder bound to a Python twin that counts the batches handed to it."""
    calls: list[int] = []

    def twin(*args: Any) -> Any:
        calls.append(1)
        return python_write_argv(*args)

    fields = ("exchange", "symbol", "side", "quantity", "price", "value_usd", "time_ms", "source", "sampled", "key")
    plain = "".join(sorted(PLAIN))
    native = live_scripts._live_native
    native.bind(Liquidation, fields, Side, Decimal, twin, BUCKET_MS, KEEP_MS, plain)
    try:
        yield calls
    finally:
        native.bind(Liquidation, fields, Side, Decimal, python_write_argv, BUCKET_MS, KEEP_MS, plain)


def _liq(
    symbol: str = "BTCUSDT",
    qty: Any = Decimal("0.5"),
    price: Any = Decimal("60000.1"),
    usd: Any = None,
    t: int = NOW,
    *,
    exchange: str = "binance",
    side: Side = Side.LONG,
    source: str = "live",
    sampled: bool = False,
    key: int = 7,
) -> Liquidation:
    value = usd if usd is not None else qty * price
    return Liquidation(exchange, symbol, side, qty, price, value, t, NOW, "SELL", source, sampled, key=key)


def test_the_compiled_twin_is_built_and_in_use() -> None:
    assert live_scripts.NATIVE, "run scripts/build_native.py (make venv-dev does)"
    assert write_argv is not python_write_argv
    assert redis_live.write_argv is write_argv  # the collector's writer imported the twin


def test_plain_batches_stay_in_c_and_odd_ones_go_whole_to_python() -> None:
    plain = [_liq(t=NOW + i * 3_000, key=i, qty=Decimal(f"0.{i + 1}00")) for i in range(10)]
    odd = [
        [*plain, _liq("BTC/USDT")],  # "/" is not plain: the key text is JSON-escaped
        [*plain, _liq(exchange='bi"nance')],
        [*plain, _liq(source="répl")],
        [*plain, _liq(qty=Decimal("1." + "1" * 60))],  # more fractional digits than the limbs hold
        [*plain, _liq(qty=Decimal("1E+60"))],  # more whole digits than the limbs hold
        [*plain, _liq(t=True)],  # type: ignore[arg-type]
        [*plain, _liq(sampled=1)],  # type: ignore[arg-type]
        [*plain, _liq(key=2**70)],
    ]
    with _counted_twin() as calls:
        assert write_argv(plain, 0, NOW) == python_write_argv(plain, 0, NOW)
        assert write_argv(tuple(plain), 0, NOW) == python_write_argv(plain, 0, NOW)  # type: ignore[arg-type]
        assert write_argv(iter(plain), 0, NOW) == python_write_argv(plain, 0, NOW)
        assert len(calls) == 2  # the list stayed in C; the tuple and the iterator went to Python
        for batch in odd:
            before = len(calls)
            assert _outcome(lambda b=batch: write_argv(b, 0, NOW)) == _outcome(
                lambda b=batch: python_write_argv(b, 0, NOW)
            )
            assert len(calls) == before + 1, batch[-1]


def test_sums_carry_across_limbs_exactly() -> None:
    big = Decimal("999999999999999999999999999.999999999999999999")
    batch = [_liq(qty=big, price=Decimal("1"), usd=big, key=k) for k in range(1_000)]
    batch += [_liq(qty=Decimal("0.000000001"), price=Decimal(1), usd=Decimal("0.000000001"), key=k) for k in range(3)]
    with _counted_twin() as calls:
        native = write_argv(batch, 0, NOW)
    assert native == python_write_argv(batch, 0, NOW) and not calls
    symbol_line = native[0][0].split("\n")[1]
    usd = {int(f[1:].partition("=")[0]): int(f.partition("=")[2]) for f in symbol_line.split("\t")[8:] if f[0] == "u"}
    with localcontext(prec=100):  # exact
        assert limbs_to_decimal(usd) == 1_000 * big + Decimal("0.000000003")


def test_amounts_printed_with_an_exponent_stay_in_c() -> None:
    amounts = ["1E+2", "2.5E-1", "1.234E-7", "0E-8", "0E+2", "1.20E+3", "9.99999E+53", "1E-54", "-1E-9"]
    batch = [_liq(qty=Decimal(a), price=Decimal(a), usd=Decimal(a), key=k) for k, a in enumerate(amounts)]
    with _counted_twin() as calls:
        native = write_argv(batch, 0, NOW)
    assert native == python_write_argv(batch, 0, NOW) and not calls
    assert native[1] == 6 and '"0.0000001234"' in native[1 - 1][1]


def test_amounts_that_are_left_out_and_the_largest_of_equals() -> None:
    batch = [
        _liq(usd=Decimal("0"), key=1),
        _liq(usd=Decimal("-0"), key=2),
        _liq(usd=Decimal("-5"), key=3),
        _liq(usd=Decimal("NaN"), key=4),
        _liq(usd=Decimal("sNaN"), key=5),
        _liq(usd=Decimal("Infinity"), key=6),
        _liq(qty=Decimal("0.000"), key=7),
        _liq(price=Decimal("-1"), key=8),
        _liq(usd=Decimal("10.50"), key=9),
        _liq(usd=Decimal("10.5"), key=10),
        _liq(usd=Decimal("9.99"), key=11),
        _liq(usd=Decimal("10.5"), t=NOW - 60_000, key=12),  # older than the cutoff below
    ]
    with _counted_twin() as calls:
        native = write_argv(batch, NOW - 1, NOW)
    assert native == python_write_argv(batch, NOW - 1, NOW) and not calls
    assert native[1] == 3


_NAMES = st.sampled_from(["BTCUSDT", "ETH-USDT-SWAP", "1000PEPEUSDT", "btc_usdt", "A:B", "BTC/USDT", "ÉTH", ""])
_AMOUNTS = (
    st.decimals(allow_nan=True, allow_infinity=True, places=None)
    | st.decimals(min_value=0, max_value=10**12, places=9)
    | st.sampled_from([Decimal("1E+2"), Decimal("2.5E-1"), Decimal("0E-8"), Decimal("-0"), Decimal("1.2300")])
    | st.integers(min_value=10**50, max_value=10**56).map(Decimal)
)


@st.composite
def _events(draw: st.DrawFn) -> Liquidation:
    qty, price = draw(_AMOUNTS), draw(_AMOUNTS)
    usd = draw(_AMOUNTS | st.just(None))
    if usd is None:
        usd = qty * price if qty.is_finite() and price.is_finite() else Decimal(1)
    return _liq(
        draw(_NAMES),
        qty,
        price,
        usd,
        NOW + draw(st.integers(min_value=-90_000, max_value=90_000)) * draw(st.sampled_from([1, 10**7])),
        exchange=draw(st.sampled_from(["binance", "bybit", "okx"])),
        side=draw(st.sampled_from([Side.LONG, Side.SHORT])),
        source=draw(st.sampled_from(["live", "replay"])),
        sampled=draw(st.booleans()),
        key=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(_events(), max_size=40), st.integers(min_value=NOW - 60_000, max_value=NOW + 60_000))
def test_the_twin_gives_what_python_gives(batch: list[Liquidation], cutoff: int) -> None:
    for events in (batch, [e for e in batch if all(c in PLAIN for c in e.symbol)]):
        native = _outcome(lambda ev=events: write_argv(ev, cutoff, NOW))
        assert native == _outcome(lambda ev=events: python_write_argv(ev, cutoff, NOW))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
            st.decimals(min_value=Decimal("0.000000001"), max_value=10**15, places=9),
            st.integers(min_value=0, max_value=40_000),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_plain_batches_never_leave_c(rows: list[tuple[str, Decimal, int]]) -> None:
    batch = [_liq(symbol, qty, Decimal("3.7"), t=NOW + dt, key=i) for i, (symbol, qty, dt) in enumerate(rows)]
    with _counted_twin() as calls:
        native = write_argv(batch, NOW, NOW)
    assert native == python_write_argv(batch, NOW, NOW) and not calls
