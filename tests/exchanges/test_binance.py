"""Binance USD-M: the parse step and the normalise step alone, on captured frames, to exact objects."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from collector.exchanges.binance import (
    BinanceAdapter,
    BinanceForceOrder,
    BinanceKline,
    combined_url,
    decode,
    parse_force_order,
    parse_kline,
    usd_value_of,
)
from collector.health import StreamHealth
from collector.validation import Rejected
from common.events import Candle, Liquidation, Side
from tests.exchanges.harness import RECEIVED_MS, adapter_settings, frame_text, frames

B = frames("binance")


def _adapter(url: str = "ws://127.0.0.1:1/market") -> BinanceAdapter:
    settings = adapter_settings(LIQ_SYMBOLS="BTCUSDT,ETHUSDT")
    return BinanceAdapter(settings, asyncio.Queue(), StreamHealth("binance", settings.source_for(url)), url=url)


def test_parse_keeps_the_venue_fields() -> None:
    stream, data = decode(frame_text("binance", "force_order_sell"))
    assert stream == "btcusdt@forceOrder"
    assert parse_force_order(data) == BinanceForceOrder(
        s="BTCUSDT", S="SELL", q="0.014", p="97210.10", ap="97354.60", X="FILLED", z="0.014", T=1732400000119
    )
    _, data = decode(frame_text("binance", "kline_open"))
    assert parse_kline(data) == BinanceKline(
        t=1732400000000,
        s="BTCUSDT",
        i="1m",
        o="97300.0",
        h="97410.0",
        l="97150.2",
        c="97210.1",
        v="412.337",
        q="40115322.51",
        x=False,
    )


def test_sell_order_is_a_long_liquidation() -> None:
    event = parse_force_order(B["force_order_sell"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert event == Liquidation(
        exchange="binance",
        symbol="BTCUSDT",
        side=Side.LONG,
        quantity=Decimal("0.014"),
        price=Decimal("97354.60"),
        value_usd=Decimal("1362.96440"),
        time_ms=1732400000119,
        received_ms=RECEIVED_MS,
        raw_side="SELL",
        source="test",
        sampled=True,
    )
    assert event.key != 0


def test_buy_order_is_a_short_liquidation() -> None:
    event = parse_force_order(B["force_order_buy"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert (event.side, event.raw_side) == (Side.SHORT, "BUY")
    assert (event.quantity, event.price, event.value_usd) == (
        Decimal("1.250"),
        Decimal("97702.30"),
        Decimal("122127.875"),
    )
    assert event.time_ms == 1732400001450


def test_other_symbols_work_the_same_way() -> None:
    event = parse_force_order(B["force_order_eth"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert (event.symbol, event.side, event.value_usd) == ("ETHUSDT", Side.LONG, Decimal("41380.625"))
    candle = parse_kline(B["kline_eth"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert (candle.symbol, candle.open, candle.close) == ("ETHUSDT", Decimal("3305.11"), Decimal("3310.02"))


def test_partial_fill_counts_its_filled_quantity() -> None:
    event = parse_force_order(B["force_order_partial"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert (event.side, event.quantity, event.price) == (Side.SHORT, Decimal("0.500"), Decimal("97800.00"))


def test_zero_fill_fields_fall_back_to_order_quantity_and_price() -> None:
    event = parse_force_order(B["force_order_no_fill_fields"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert (event.quantity, event.price) == (Decimal("0.300"), Decimal("97100.00"))
    data = json.loads(json.dumps(B["force_order_sell"]["data"]))
    del data["o"]["z"], data["o"]["ap"]
    event = parse_force_order(data).to_event(RECEIVED_MS, "test", None)
    assert (event.quantity, event.price) == (Decimal("0.014"), Decimal("97210.10"))


def test_klines_open_and_closed() -> None:
    open_candle = parse_kline(B["kline_open"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert open_candle == Candle(
        exchange="binance",
        symbol="BTCUSDT",
        open_ms=1732400000000,
        open=Decimal("97300.0"),
        high=Decimal("97410.0"),
        low=Decimal("97150.2"),
        close=Decimal("97210.1"),
        volume=Decimal("412.337"),
        quote_volume=Decimal("40115322.51"),
        closed=False,
        received_ms=RECEIVED_MS,
        source="test",
    )
    closed = parse_kline(B["kline_closed"]["data"]).to_event(RECEIVED_MS, "test", None)
    assert (closed.open_ms, closed.closed, closed.close, closed.volume) == (
        1732400000000,
        True,
        Decimal("97222.4"),
        Decimal("455.001"),
    )


def test_dispatcher_routes_both_streams() -> None:
    adapter = _adapter()
    [liq] = adapter.handle(frame_text("binance", "force_order_sell"), RECEIVED_MS)
    [candle] = adapter.handle(frame_text("binance", "kline_closed").encode(), RECEIVED_MS)
    assert isinstance(liq, Liquidation) and liq.source == "test"
    assert isinstance(candle, Candle) and candle.closed
    assert adapter.handle('{"result":null,"id":1}', RECEIVED_MS) == []
    assert not adapter.health.drops


def _mutated(name: str, **order: object) -> str:
    frame = json.loads(frame_text("binance", name))
    frame["data"]["o"].update(order)
    return json.dumps(frame)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade"}}', "unknown_message"),
        ('{"stream":"btcusdt@forceOrder","data":"x"}', "bad_field"),
        ('{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder"}}', "missing_field"),
        (_mutated("force_order_sell", T="1732400000119"), "bad_field"),
        (_mutated("force_order_sell", z=0.014), "bad_field"),
        (_mutated("force_order_sell", q="0", z="0"), "bad_value"),
        (_mutated("force_order_sell", ap="NaN", p="-1"), "bad_number"),
        (_mutated("force_order_sell", ap="Infinity", p="Infinity"), "bad_number"),
        (_mutated("force_order_sell", z="200000", ap="97000"), "bad_value"),
        (_mutated("force_order_sell", S="HOLD"), "bad_value"),
        (_mutated("force_order_sell", X="NEW", z="0"), "not_filled"),
        (_mutated("force_order_sell", X="PARTIALLY_FILLED", z="0"), "not_filled"),
        (_mutated("force_order_sell", T=RECEIVED_MS + 301_000), "future_time"),
        (frame_text("binance", "force_order_new"), "not_filled"),
    ],
)
def test_bad_frames_are_dropped_with_a_reason(raw: str, reason: str) -> None:
    adapter = _adapter()
    assert adapter.handle(raw, RECEIVED_MS) == []
    assert adapter.health.drops == {reason: 1}


def test_stale_times_are_dropped_only_on_live_streams() -> None:
    late = RECEIVED_MS + 3600 * 1000 + 1
    live = _adapter("wss://fstream.binance.com/market")
    assert live.source == "live"
    assert live.handle(frame_text("binance", "force_order_sell"), late) == []
    assert live.health.drops == {"stale_time": 1}
    replay = _adapter()
    [event] = replay.handle(frame_text("binance", "force_order_sell"), late)
    assert isinstance(event, Liquidation) and event.source == "test"


def test_combined_url_lists_lower_case_streams() -> None:
    assert combined_url("ws://h:1/market/", ("BTCUSDT", "ETHUSDT")) == (
        "ws://h:1/market/stream?streams=btcusdt@forceOrder/btcusdt@kline_1m/ethusdt@forceOrder/ethusdt@kline_1m"
    )


def test_usd_value_is_decided_in_one_place() -> None:
    assert usd_value_of("BTCUSDT", Decimal("2"), Decimal("100")) == Decimal(200)
    assert usd_value_of("ETHUSDC", Decimal("2"), Decimal("100")) == Decimal(200)
    assert usd_value_of("BTCUSDT_250328", Decimal("2"), Decimal("100")) == Decimal(200)
    # COIN-M contracts have a USD face value: 100 for BTC, 10 for the others.
    assert usd_value_of("BTCUSD_PERP", Decimal("3"), Decimal("97000")) == Decimal(300)
    assert usd_value_of("ETHUSD_PERP", Decimal("3"), Decimal("3300")) == Decimal(30)
    with pytest.raises(Rejected):
        usd_value_of("WEIRD", Decimal("1"), Decimal("1"))
