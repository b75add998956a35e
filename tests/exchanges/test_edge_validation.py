"""Validation at the edge, per item (issue #9): hostile venue text is dropped and counted item by
item, the good items of the same frame kept; numbers are plain decimals with one canonical form;
venue text reaches the log as one line.

The frames are written as a hostile venue would send them: lone surrogates and control characters
as real JSON escapes in the raw text, over a real WebSocket where the loop matters.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bybit import BybitAdapter, BybitLiquidation
from collector.exchanges.connection import ExchangeAdapter
from collector.health import StreamHealth, one_line
from collector.replay_server import BybitServer, Peer
from collector.storage.redis_live import fast_member
from collector.validation import Rejected, _number, amount, amount_text, clean_frame, volume
from common.events import Liquidation, Side, canonical_text, dedup_key
from common.live_view import decode_liquidation
from tests.exchanges.harness import RECEIVED_MS, Running, adapter_settings, frames

B = frames("binance")
LONG_SYMBOL = "B" * 2796 + "USDT"  # finding 1: 2,800 letters
NUL_SYMBOL = "BTC\x00USDT"  # finding 2
FORGED = "\n20261201 00:00:00 UTC WARNING collector.pipeline: INSTITUTIONAL: forged"


def _adapter(cls: type[ExchangeAdapter]) -> Any:
    settings = adapter_settings(LIQ_SYMBOLS="BTCUSDT,ETHUSDT")
    return cls(settings, asyncio.Queue(), StreamHealth(cls.name, "test"), url="ws://127.0.0.1:1/x")


def _item(t: int, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"T": t, "s": "BTCUSDT", "S": "Buy", "v": "0.250", "p": "97012.50"}
    item.update(fields)
    return item


def _bybit(*items: dict[str, Any], topic: str = "allLiquidation.BTCUSDT", ascii_only: bool = True) -> str:
    """The raw text a venue sends: json.dumps writes a lone surrogate or a control character as a
    JSON escape ("\\ud800", "\\u0000"), as a hostile venue would."""
    frame = {"topic": topic, "type": "snapshot", "ts": 1732400002000, "data": list(items)}
    return json.dumps(frame, ensure_ascii=ascii_only, separators=(",", ":"))


def _force_order(**order: Any) -> str:
    frame = json.loads(json.dumps(B["force_order_sell"]))
    frame["data"]["o"].update(order)
    return json.dumps(frame)


def _kline(**k: Any) -> str:
    frame = json.loads(json.dumps(B["kline_open"]))
    frame["data"]["k"].update(k)
    return json.dumps(frame)


def _times(events: list[Any]) -> list[int]:
    return [e.time_ms for e in events]


# -- finding 3: one lone surrogate costs its item, not the frame ---------------------------------


async def test_a_lone_surrogate_over_a_real_websocket_costs_only_its_item() -> None:
    raw = _bybit(
        _item(1732400001001),
        _item(1732400001002, s="BTC\ud800USDT"),  # the symbol
        _item(1732400001003, S="Buy\ud800"),  # the side
        _item(1732400001004, x="\ud800"),  # a field nobody reads
        _item(1732400001005, S="Sell", v="0.004"),
    )
    assert "\\ud800" in raw and raw.isascii()  # a real JSON escape in the raw text
    async with BybitServer() as srv:
        settings = adapter_settings(LIQ_BYBIT_WS_URL=srv.url)
        async with Running(BybitAdapter, srv.url, settings) as run:
            await srv.wait_connected(1)
            await run.wait_for(lambda: bool(run.statuses("connected")))
            assert await srv.push_raw(raw) == 1
            await run.wait_for(lambda: sum(run.health.drops.values()) == 3)
            await run.wait_for(lambda: len(run.liquidations()) == 2)
            assert run.health.connected  # the connection went on
    assert _times(run.liquidations()) == [1732400001001, 1732400001005]
    assert run.health.drops == {"bad_symbol": 1, "bad_text": 2}
    assert run.health.events == 2


# -- findings 1 and 2: long and NUL symbols, dropped and counted, the rest kept ----------------


@pytest.mark.parametrize(
    ("symbol", "reason"),
    [
        (LONG_SYMBOL, "bad_symbol"),
        (NUL_SYMBOL, "bad_symbol"),
        ("BTCUSDT\n", "bad_symbol"),  # "$" in a pattern lets a trailing newline through
        ("BTC USDT", "bad_symbol"),
        ("[BTCUSDT](https://evil.example)", "bad_symbol"),
        ("<b>BTCUSDT</b>", "bad_symbol"),
        ("١٢USDT", "bad_symbol"),
        ("", "bad_symbol"),
    ],
)
def test_bad_symbols_are_dropped_and_counted_the_rest_kept(symbol: str, reason: str) -> None:
    adapter = _adapter(BybitAdapter)
    raw = _bybit(_item(1732400001001), _item(1732400001002, s=symbol), _item(1732400001003, s="ETHUSDT"))
    events = adapter.handle(raw, RECEIVED_MS)
    assert [(e.time_ms, e.symbol) for e in events] == [(1732400001001, "BTCUSDT"), (1732400001003, "ETHUSDT")]
    assert adapter.health.drops == {reason: 1}


@pytest.mark.parametrize("symbol", [LONG_SYMBOL, NUL_SYMBOL, "BTCUSDT\n", "btcusdt"])
def test_bad_symbols_are_refused_on_every_stream(symbol: str) -> None:
    binance = _adapter(BinanceAdapter)
    assert binance.handle(_force_order(s=symbol), RECEIVED_MS) == []
    assert binance.handle(_kline(s=symbol), RECEIVED_MS) == []
    assert binance.health.drops == {"bad_symbol": 2}
    bybit = _adapter(BybitAdapter)
    kline = json.loads(json.dumps(frames("bybit")["kline_open"]))
    kline["topic"] = f"kline.1.{symbol}"
    assert bybit.handle(json.dumps(kline), RECEIVED_MS) == []
    assert bybit.health.drops == {"bad_symbol": 1}


def test_no_long_text_is_kept_in_the_symbol_cache() -> None:
    adapter = _adapter(BybitAdapter)
    for n in range(50):
        adapter.handle(_bybit(_item(1732400001001, s=f"{n:04d}" + LONG_SYMBOL)), RECEIVED_MS)
    assert adapter.health.drops == {"bad_symbol": 50}
    from collector.validation import check_symbol

    assert check_symbol.cache_info().currsize < 8192  # refusals raise: never cached


# -- non-ASCII names are real names ------------------------------------------------------------


@pytest.mark.parametrize("ascii_only", [False, True], ids=["utf-8", "json-escapes"])
def test_non_ascii_symbols_pass_end_to_end(ascii_only: bool) -> None:
    bybit = _adapter(BybitAdapter)
    raw = _bybit(
        _item(1732400001001, s="币安人生USDT", v="120"), _item(1732400001002, s="龙虾USDT"), ascii_only=ascii_only
    )
    first, second = bybit.handle(raw, RECEIVED_MS)
    assert (first.symbol, second.symbol) == ("币安人生USDT", "龙虾USDT")
    assert first.value_usd == Decimal("120") * Decimal("97012.5")
    assert first.key == dedup_key(
        "bybit", "币安人生USDT", 1732400001001, Side.LONG, first.price, first.quantity, "1732400002000#0"
    )
    assert first.key != dedup_key(
        "bybit", "BTCUSDT", 1732400001001, Side.LONG, first.price, first.quantity, "1732400002000#0"
    )
    assert decode_liquidation(fast_member(first))["symbol"] == "币安人生USDT"
    binance = _adapter(BinanceAdapter)
    [liq] = binance.handle(_force_order(s="牛来USDT"), RECEIVED_MS)
    [candle] = binance.handle(_kline(s="牛来USDT"), RECEIVED_MS)
    assert (liq.symbol, candle.symbol) == ("牛来USDT", "牛来USDT")
    assert not bybit.health.drops and not binance.health.drops


# -- other venue text: control characters and surrogates refused per item -----------------------


@pytest.mark.parametrize(
    "order",
    [
        {"S": "SELL\x00"},
        {"X": "FILLED\x07"},
        {"o": "LIMIT\u2028"},  # a line separator in a field nobody reads
        {"f": "IOC\ud800"},
        {"S": "SELL\u202e"},  # a right-to-left override
    ],
)
def test_binance_text_fields_with_control_characters_are_refused(order: dict[str, str]) -> None:
    adapter = _adapter(BinanceAdapter)
    assert adapter.handle(_force_order(**order), RECEIVED_MS) == []
    assert adapter.handle(_force_order(), RECEIVED_MS) != []  # the next frame is fine
    assert adapter.health.drops == {"bad_text": 1}


def test_bybit_kline_items_with_control_characters_are_refused() -> None:
    kline = json.loads(json.dumps(frames("bybit")["kline_open"]))
    good = kline["data"][0]
    kline["data"] = [dict(good, interval="1\n"), good]
    adapter = _adapter(BybitAdapter)
    assert len(adapter.handle(json.dumps(kline), RECEIVED_MS)) == 1
    assert adapter.health.drops == {"bad_text": 1}


@given(
    st.dictionaries(
        st.text(max_size=3),
        st.one_of(st.text(st.characters(exclude_categories=()), max_size=6), st.integers(), st.none()),
        max_size=6,
    ),
    st.booleans(),
)
def test_a_clean_frame_holds_only_printable_text(obj: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(obj, ensure_ascii=ascii_only)
    if clean_frame(raw) or clean_frame(raw.encode("utf-8", "surrogatepass")):
        decoded = json.loads(raw)
        assert all(k.isprintable() for k in decoded)
        assert all(v.isprintable() for v in decoded.values() if isinstance(v, str))


# -- numbers: plain ASCII decimals, one canonical form ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [" 1", "1 ", "1_000", "١٢", "１２", "+1", "-1", "-0", "Infinity", "-Infinity", "NaN", "sNaN", "1e5", "1E+5"]
    + ["5E-1", ".5", "5.", "00.5", "007", "0x10", "1,5", "1.2.3", "", "9" * 29, "0.2139" + "0" * 23],
)
def test_numbers_that_are_not_plain_decimals_are_bad_numbers(text: str) -> None:
    bybit = _adapter(BybitAdapter)
    events = bybit.handle(_bybit(_item(1732400001001, v=text), _item(1732400001002)), RECEIVED_MS)
    assert _times(events) == [1732400001002]
    assert bybit.health.drops == {"bad_number": 1}
    binance = _adapter(BinanceAdapter)
    assert binance.handle(_force_order(ap=text), RECEIVED_MS) == [] or text == ""  # "" is an absent ap
    assert binance.handle(_kline(c=text), RECEIVED_MS) == []
    assert binance.handle(_kline(v=text), RECEIVED_MS) == []
    assert binance.health.drops == {"bad_number": 2 if text == "" else 3}


@pytest.mark.parametrize("text", ["1\x00", "1\ud800", "1\n"])
def test_numbers_with_control_characters_are_bad_text(text: str) -> None:
    adapter = _adapter(BybitAdapter)
    assert _times(adapter.handle(_bybit(_item(1732400001001, p=text), _item(1732400001002)), RECEIVED_MS)) == [
        1732400001002
    ]
    assert adapter.health.drops == {"bad_text": 1}
    with pytest.raises(Rejected) as refused:
        amount(text)  # and on their own they are not numbers
    assert refused.value.reason == "bad_number"


def test_out_of_range_plain_numbers_are_bad_values() -> None:
    for text in ("0", "0.000", "1000000000000001", "0.0000000000000000001"):
        with pytest.raises(Rejected) as refused:
            amount(text)
        assert refused.value.reason == "bad_value", text
    assert volume("0.000") == 0 and str(volume("0.000")) == "0"


def test_the_same_liquidation_written_differently_is_one_event() -> None:
    """Finding 8: "0.5", "0.50", "0.500" give one event: one key, one Redis member."""
    adapter = _adapter(BybitAdapter)
    events = [
        adapter.handle(_bybit(_item(1732400001001, v=v, p=p)), RECEIVED_MS)[0]
        for v, p in [("0.5", "97012.5"), ("0.50", "97012.50"), ("0.500", "97012.500000")]
    ]
    assert events[0] == events[1] == events[2]
    assert {str(e.quantity) for e in events} == {"0.5"} and {str(e.price) for e in events} == {"97012.5"}
    assert len({e.key for e in events}) == 1 and len({fast_member(e) for e in events}) == 1
    assert events[0].key == dedup_key(
        "bybit", "BTCUSDT", 1732400001001, Side.LONG, Decimal("97012.5"), Decimal("0.5"), "1732400002000#0"
    )
    assert adapter.handle(_bybit(_item(1732400001001, v="5E-1")), RECEIVED_MS) == []  # exponents are refused
    assert adapter.health.drops == {"bad_number": 1}
    binance = _adapter(BinanceAdapter)
    a = binance.handle(_force_order(z="0.014", q="0.014", ap="97354.6"), RECEIVED_MS)
    b = binance.handle(_force_order(z="0.01400", q="0.0140", ap="97354.60"), RECEIVED_MS)
    assert a == b and str(a[0].quantity) == "0.014"


def test_integers_stay_integers_and_candles_are_canonical_too() -> None:
    [liq] = _adapter(BybitAdapter).handle(_bybit(_item(1732400001001, v="100.0", p="3.00")), RECEIVED_MS)
    assert (str(liq.quantity), str(liq.price)) == ("100", "3")
    [candle] = _adapter(BinanceAdapter).handle(_kline(o="97300.0", h="97410.00", v="412.3370"), RECEIVED_MS)
    assert (str(candle.open), str(candle.high), str(candle.volume)) == ("97300", "97410", "412.337")


@given(st.from_regex(r"(0|[1-9][0-9]{0,12})(\.[0-9]{1,12})?", fullmatch=True), st.integers(0, 4))
def test_the_canonical_text_is_the_key_text(text: str, zeros: int) -> None:
    try:
        canonical, value = amount_text(text)
    except Rejected as refused:
        assert refused.reason == "bad_value"  # zero or below 1e-18
        return
    assert value == Decimal(text)
    assert canonical == canonical_text(value) == f"{value.normalize():f}"
    padded = text + "0" * zeros if "." in text else text + ("." + "0" * zeros if zeros else "")
    if len(padded) <= 28:  # longer numbers are refused (Decimal's 28 digits)
        assert amount_text(padded)[0] == canonical and str(amount_text(padded)[1]) == str(value)
    if value >= Decimal("1e-6"):
        assert str(value) == canonical  # no exponent, no trailing zero: one text per value


# -- finding 11: venue text in the log is one line ----------------------------------------------


def _one_line_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records]
    assert messages
    for message in messages:
        assert "\n" not in message and "\r" not in message and "\u2028" not in message, message
    return messages


def test_a_newline_in_a_symbol_or_a_frame_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="collector.exchanges")
    adapter = _adapter(BybitAdapter)
    assert _times(adapter.handle(_bybit(_item(1, s="BTCUSDT" + FORGED), _item(1732400001002)), RECEIVED_MS)) == [
        1732400001002
    ]
    # JSON allows line breaks between tokens: the raw text itself holds real newlines.
    assert adapter.handle('{"topic":"allLiquidation.BTCUSDT",' + FORGED + "\n}", RECEIVED_MS) == []
    assert adapter.health.drops == {"bad_symbol": 1, "bad_json": 1}
    messages = _one_line_records(caplog)
    assert len(messages) == 2 and "\\n20261201" in messages[1]


def test_a_refusal_message_with_a_newline_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="collector.exchanges")
    adapter = _adapter(BybitAdapter)
    adapter.current = shard = adapter.shards[0]
    shard.pending = {"sub-1": (True, ["allLiquidation.BTCUSDT"])}
    refusal = {"success": False, "ret_msg": "Invalid topic" + FORGED, "req_id": "sub-1", "op": "subscribe"}
    adapter.handle(json.dumps(refusal), RECEIVED_MS)
    [reason] = adapter.refused.values()
    assert "\n" not in reason and "\\n20261201" in reason
    assert all("\n" not in m for m in _one_line_records(caplog))


class _RefusingBybit(BybitServer):
    """Refuses every subscription with a message that tries to forge a log line."""

    async def _on_message(self, peer: Peer, text: str) -> None:
        request = json.loads(text)
        if request.get("op") == "subscribe":
            reply = {"success": False, "ret_msg": "Invalid topic" + FORGED, "req_id": request.get("req_id")}
            await self._send(peer, json.dumps(dict(reply, op="subscribe", conn_id=peer.conn_id)))


async def test_a_refusal_over_the_wire_logs_one_line_and_shows_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="collector.exchanges")
    async with _RefusingBybit() as srv:
        async with Running(BybitAdapter, srv.url, adapter_settings(LIQ_BYBIT_WS_URL=srv.url)) as run:
            await run.wait_for(lambda: len(run.adapter.refused) == 2)
    assert not [s for s in run.statuses("disconnected") if s.reason != "shutdown"]
    assert all(r.startswith("Invalid topic\\n20261201") for r in run.health.snapshot()["refused_topics"].values())
    messages = _one_line_records(caplog)
    assert any("refused: Invalid topic" in m for m in messages)


def test_a_parser_bug_in_one_item_costs_that_item_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.exchanges")
    original = BybitLiquidation.to_event

    def buggy(self: BybitLiquidation, received_ms: int, source: str, max_age_ms: int | None, *rest: Any) -> Liquidation:
        if self.s == "ETHUSDT":
            raise ValueError("boom" + FORGED)
        return original(self, received_ms, source, max_age_ms, *rest)

    monkeypatch.setattr(BybitLiquidation, "to_event", buggy)
    adapter = _adapter(BybitAdapter)
    raw = _bybit(_item(1732400001001), _item(1732400001002, s="ETHUSDT"), _item(1732400001003))
    assert _times(adapter.handle(raw, RECEIVED_MS)) == [1732400001001, 1732400001003]
    assert adapter.health.drops == {"parse_error": 1}
    [message] = _one_line_records(caplog)
    assert "ValueError: boom\\n20261201" in message and "Traceback" in message


def test_one_line_escapes_what_is_not_printable_and_bounds_the_length() -> None:
    assert one_line("币安人生USDT") == "币安人生USDT"
    assert one_line("a\nb\r\x00\ud800\u202e\u2028\\z") == "a\\nb\\r\\x00\\ud800\\u202e\\u2028\\\\z"
    long = one_line("x" * 10_000)
    assert len(long) < 600 and long.endswith("... (10000 chars)")
    assert len(one_line("\n" * 10_000, 100)) < 130


def _reason(call: Callable[[], object]) -> object:
    try:
        return call()
    except Rejected as refused:
        return refused.reason


@given(
    st.one_of(
        st.integers(-(10**17), 10**17).map(str),
        st.text(alphabet="0123456789.-+eE _²١", max_size=30),
    )
)
def test_the_whole_number_shortcut_agrees_with_the_general_rule(text: str) -> None:
    """`amount_text`'s first line (whole numbers) gives exactly what `_number()` and the bounds give."""
    expected = _reason(lambda: (_number(text)[0], amount(text)))
    got = _reason(lambda: amount_text(text))
    assert got == expected
    if isinstance(got, tuple):
        assert str(got[1]) == str(expected[1])  # type: ignore[index]
