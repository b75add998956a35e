"""Bybit v5 linear: the parse step and the normalise step alone, on captured frames, to exact objects."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from collector.exchanges.bybit import BybitAdapter, BybitKline, BybitLiquidation, decode, parse_kline, parse_liquidation
from collector.health import StreamHealth
from common.events import Candle, Liquidation, Side
from tests.exchanges.harness import RECEIVED_MS, adapter_settings, frame_text, frames

Y = frames("bybit")


def _adapter(url: str = "ws://127.0.0.1:1/v5/public/linear") -> BybitAdapter:
    settings = adapter_settings(LIQ_SYMBOLS="BTCUSDT,ETHUSDT")
    return BybitAdapter(settings, asyncio.Queue(), StreamHealth("bybit", settings.source_for(url)), url=url)


def test_parse_keeps_the_venue_fields() -> None:
    msg = decode(frame_text("bybit", "liquidation_two"))
    assert [parse_liquidation(item) for item in msg["data"]] == [
        BybitLiquidation(T=1732400000321, s="BTCUSDT", S="Buy", v="0.250", p="97012.50"),
        BybitLiquidation(T=1732400000377, s="BTCUSDT", S="Sell", v="0.004", p="97655.00"),
    ]
    assert parse_kline(Y["kline_open"]["data"][0], "BTCUSDT") == BybitKline(
        symbol="BTCUSDT",
        start=1732400000000,
        interval="1",
        open="97300",
        high="97410",
        low="97150.2",
        close="97210.1",
        volume="388.21",
        turnover="37766554.2",
        confirm=False,
    )


def test_buy_position_is_a_long_liquidation_and_sell_a_short() -> None:
    buy, sell = (parse_liquidation(item).to_event(RECEIVED_MS, "test", None) for item in Y["liquidation_two"]["data"])
    assert buy == Liquidation(
        exchange="bybit",
        symbol="BTCUSDT",
        side=Side.LONG,
        quantity=Decimal("0.250"),
        price=Decimal("97012.50"),
        value_usd=Decimal("24253.12500"),
        time_ms=1732400000321,
        received_ms=RECEIVED_MS,
        raw_side="Buy",
        source="test",
        sampled=False,
    )
    assert sell == Liquidation(
        exchange="bybit",
        symbol="BTCUSDT",
        side=Side.SHORT,
        quantity=Decimal("0.004"),
        price=Decimal("97655.00"),
        value_usd=Decimal("390.62000"),
        time_ms=1732400000377,
        received_ms=RECEIVED_MS,
        raw_side="Sell",
        source="test",
        sampled=False,
    )


def test_one_frame_carries_many_liquidations() -> None:
    events = _adapter().handle(frame_text("bybit", "liquidation_five"), RECEIVED_MS)
    assert [(e.side, e.quantity, e.time_ms) for e in events if isinstance(e, Liquidation)] == [
        (Side.LONG, Decimal("0.010"), 1732400001011),
        (Side.LONG, Decimal("0.500"), 1732400001102),
        (Side.LONG, Decimal("1.234"), 1732400001203),
        (Side.SHORT, Decimal("0.002"), 1732400001304),
        (Side.LONG, Decimal("3.000"), 1732400001405),
    ]
    assert len({e.key for e in events if isinstance(e, Liquidation)}) == 5


def test_other_symbols_work_the_same_way() -> None:
    adapter = _adapter()
    [liq] = adapter.handle(frame_text("bybit", "liquidation_eth"), RECEIVED_MS)
    [candle] = adapter.handle(frame_text("bybit", "kline_eth"), RECEIVED_MS)
    assert isinstance(liq, Liquidation) and (liq.symbol, liq.side, liq.value_usd) == (
        "ETHUSDT",
        Side.SHORT,
        Decimal("13944.6300"),
    )
    assert isinstance(candle, Candle) and (candle.symbol, candle.low) == ("ETHUSDT", Decimal("3301"))


def test_klines_open_and_closed() -> None:
    adapter = _adapter()
    [open_candle] = adapter.handle(frame_text("bybit", "kline_open"), RECEIVED_MS)
    assert open_candle == Candle(
        exchange="bybit",
        symbol="BTCUSDT",
        open_ms=1732400000000,
        open=Decimal("97300"),
        high=Decimal("97410"),
        low=Decimal("97150.2"),
        close=Decimal("97210.1"),
        volume=Decimal("388.21"),
        quote_volume=Decimal("37766554.2"),
        closed=False,
        received_ms=RECEIVED_MS,
        source="test",
    )
    [closed] = adapter.handle(frame_text("bybit", "kline_closed"), RECEIVED_MS)
    assert isinstance(closed, Candle) and (closed.closed, closed.close) == (True, Decimal("97222.4"))


def test_good_items_survive_a_bad_one_in_the_same_frame() -> None:
    frame = json.loads(frame_text("bybit", "liquidation_five"))
    frame["data"][1]["v"] = "NaN"
    frame["data"][3]["S"] = "Hold"
    del frame["data"][4]["T"]
    adapter = _adapter()
    events = adapter.handle(json.dumps(frame), RECEIVED_MS)
    assert [e.time_ms for e in events if isinstance(e, Liquidation)] == [1732400001011, 1732400001203]
    assert adapter.health.drops == {"bad_number": 1, "bad_value": 1, "missing_field": 1}


def test_acks_confirm_the_subscription_and_pongs_are_not_data() -> None:
    adapter = _adapter()
    [shard] = adapter.shards
    adapter.current = shard
    shard.pending = {"sub-1": (True, ["allLiquidation.BTCUSDT"]), "sub-2": (True, ["kline.1.BTCUSDT"])}
    adapter.handle(frame_text("bybit", "subscribe_ack"), RECEIVED_MS)
    assert list(shard.pending) == ["sub-2"] and shard.active == {"allLiquidation.BTCUSDT"}
    adapter.handle(frame_text("bybit", "subscribe_ack").replace("sub-1", "sub-2"), RECEIVED_MS)
    assert not shard.pending and shard.active == {"allLiquidation.BTCUSDT", "kline.1.BTCUSDT"}
    assert adapter.handle(frame_text("bybit", "pong"), RECEIVED_MS) == []
    assert not adapter.health.drops


def test_a_refused_topic_is_remembered_and_the_rest_is_sent_again() -> None:
    adapter = _adapter()
    [shard] = adapter.shards
    adapter.current = shard
    batch = ["allLiquidation.NOPEUSDT", "kline.1.NOPEUSDT", "allLiquidation.BTCUSDT"]
    shard.wanted.update(dict.fromkeys(batch))
    shard.pending = {"sub-1": (True, batch)}
    refusal = json.loads(frame_text("bybit", "subscribe_refused"))
    refusal.update(req_id="sub-1")
    assert adapter.handle(json.dumps(refusal), RECEIVED_MS) == []  # no SessionEnded: the connection stays
    assert adapter.refused == {"allLiquidation.NOPEUSDT": "Invalid symbol :[allLiquidation.NOPEUSDT]"}
    assert adapter.health.snapshot()["refused_topics"] == adapter.refused and adapter.health.refusals == 1
    [again] = [json.loads(m) for m in shard.outbox]
    assert again["op"] == "subscribe" and again["args"] == ["kline.1.NOPEUSDT", "allLiquidation.BTCUSDT"]
    assert "allLiquidation.NOPEUSDT" not in shard.wanted


def test_twin_liquidations_in_one_frame_keep_two_keys_and_a_resent_frame_the_same_ones() -> None:
    """Issue 10 item 5: Bybit sends no id; the frame's ts and the item's index tell twins apart."""
    twin = {"T": 1732400000321, "s": "BTCUSDT", "S": "Buy", "v": "0.250", "p": "97012.50"}
    frame = json.dumps(
        {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1732400000500, "data": [twin, twin]}
    )
    adapter = _adapter()
    first = [e for e in adapter.handle(frame, RECEIVED_MS) if isinstance(e, Liquidation)]
    again = [e for e in adapter.handle(frame, RECEIVED_MS + 5000) if isinstance(e, Liquidation)]
    assert len(first) == 2 and first[0].key != first[1].key
    assert [e.key for e in again] == [e.key for e in first]
    later = json.loads(frame)
    later["ts"] = 1732400001000  # the same item in the next push is another liquidation
    moved = [e for e in adapter.handle(json.dumps(later), RECEIVED_MS) if isinstance(e, Liquidation)]
    assert len(moved) == 2 and {e.key for e in moved}.isdisjoint({e.key for e in first})


def test_usdc_perpetuals_are_valued_at_par() -> None:
    """Issue 10 item 5: BTCPERP (quote USDC, not in its name) is valued, not dropped."""
    item = {"T": 1732400000321, "s": "BTCPERP", "S": "Sell", "v": "0.5", "p": "97000"}
    frame = json.dumps({"topic": "allLiquidation.BTCPERP", "ts": 1732400000500, "data": [item]})
    [event] = _adapter().handle(frame, RECEIVED_MS)
    assert isinstance(event, Liquidation)
    assert (event.symbol, event.side, event.value_usd) == ("BTCPERP", Side.SHORT, Decimal("48500.0"))
    pepe = {"T": 1732400000321, "s": "1000PEPEUSDT", "S": "Buy", "v": "2000", "p": "0.0125"}
    frame = json.dumps({"topic": "allLiquidation.1000PEPEUSDT", "ts": 1732400000500, "data": [pepe]})
    [event] = _adapter().handle(frame, RECEIVED_MS)
    assert isinstance(event, Liquidation)
    assert (event.symbol, event.quantity, event.price, event.value_usd) == (
        "1000PEPEUSDT",
        Decimal("2000"),
        Decimal("0.0125"),
        Decimal("25.0000"),
    )


def _item(**fields: object) -> str:
    frame = json.loads(frame_text("bybit", "liquidation_one"))
    frame["data"][0].update(fields)
    return json.dumps(frame)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "bad_json"),
        ('"text"', "bad_json"),
        ('{"topic":"orderbook.50.BTCUSDT","data":{}}', "unknown_message"),
        ('{"topic":"kline.5.BTCUSDT","data":[]}', "unknown_message"),
        ('{"hello":"world"}', "unknown_message"),
        ('{"topic":"allLiquidation.BTCUSDT","data":{"T":1}}', "bad_field"),
        ('{"topic":"allLiquidation.BTCUSDT"}', "missing_field"),
        ('{"topic":"allLiquidation.BTCUSDT","data":[7]}', "bad_field"),
        (_item(T=1732400000911.5), "bad_field"),
        (_item(T=True), "bad_field"),
        (_item(v=0.12), "bad_field"),
        (_item(v="0"), "bad_value"),
        (_item(p="-97710"), "bad_number"),
        (_item(p="1e400"), "bad_number"),
        (_item(p="sNaN"), "bad_number"),
        (_item(v="200000", p="97000"), "bad_value"),
        (_item(T=RECEIVED_MS + 400_000), "future_time"),
        (_item(T=12), "bad_value"),
        ('{"op":"auth","success":true}', "unknown_message"),
    ],
)
def test_bad_frames_are_dropped_with_a_reason(raw: str | bytes, reason: str) -> None:
    adapter = _adapter()
    assert adapter.handle(raw, RECEIVED_MS) == []
    assert adapter.health.drops == {reason: 1}


def test_stale_times_are_dropped_only_on_live_streams() -> None:
    late = RECEIVED_MS + 3600 * 1000 + 1
    live = _adapter("wss://stream.bybit.com/v5/public/linear")
    assert live.handle(frame_text("bybit", "liquidation_two"), late) == []
    assert live.health.drops == {"stale_time": 2}
    assert len(_adapter().handle(frame_text("bybit", "liquidation_two"), late)) == 2
