"""Gate USDT perpetuals: the parse step and the normalise step alone, on captured-shape frames, to exact
objects (contracts x quanto_multiplier, sides both ways, twins, bad items counted), then the live
adapter against the fake venue: subscribe, receive, a refusal, the application ping, a reconnect."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from collector.exchanges.gate import (
    GateAdapter,
    GateCandle,
    GateLiquidation,
    decode,
    parse_candle,
    parse_liquidation,
)
from collector.health import StreamHealth
from collector.validation import clean_frame
from common.events import Candle, Liquidation, Side, dedup_key_of_texts
from common.instruments import CONTRACTS, PERPETUAL, Instrument, guess_instrument
from tests.exchanges.harness import RECEIVED_MS, Running, adapter_settings, frame_text, frames
from tests.fakes.gate import FakeGateServer

G = frames("gate")


def _contract(symbol: str, size: str, base: str | None = None) -> Instrument:
    coin, _, quote = symbol.partition("_")
    return Instrument(
        exchange="gate",
        symbol=symbol,
        base=base or coin,
        quote=quote,
        contract_type=PERPETUAL,
        size_unit=CONTRACTS,
        contract_size=Decimal(size),
    )


LISTED = {
    "BTC_USDT": _contract("BTC_USDT", "0.0001"),
    "ETH_USDT": _contract("ETH_USDT", "0.01"),
    "PEPE_USDT": _contract("PEPE_USDT", "10000000"),
}


def lookup(exchange: str, symbol: str) -> Instrument:
    return LISTED.get(symbol) or guess_instrument(exchange, symbol)


def _adapter(url: str = "ws://127.0.0.1:1/v4/ws/usdt", symbols: str = "BTC_USDT,ETH_USDT") -> GateAdapter:
    settings = adapter_settings(LIQ_EXCHANGES="gate", LIQ_SYMBOLS=symbols)
    adapter = GateAdapter(settings, asyncio.Queue(), StreamHealth("gate", settings.source_for(url)), url=url)
    adapter.instrument_of = lookup
    return adapter


def _liquidations(events: list[Any]) -> list[Liquidation]:
    return [e for e in events if isinstance(e, Liquidation)]


def test_parse_keeps_the_venue_fields() -> None:
    msg = decode(frame_text("gate", "liquidation_two"))
    assert [parse_liquidation(item) for item in msg["result"]] == [
        GateLiquidation(contract="BTC_USDT", size="-2500", price="97012.5", time_ms=1732400000321),
        GateLiquidation(contract="BTC_USDT", size="40", price="97655.0", time_ms=1732400000377),
    ]
    assert parse_candle(G["candle_open"]["result"][0]) == GateCandle(
        t=1732400000, v="3882100", c="97210.1", h="97410", l="97150.2", o="97300", n="1m_BTC_USDT", w=False
    )


def test_a_negative_order_size_is_a_long_liquidation_and_a_positive_one_a_short() -> None:
    """Contracts x quanto_multiplier (BTC_USDT: 0.0001 BTC a contract); the key takes the frame time and index."""
    sell, buy = (
        parse_liquidation(item).to_event(RECEIVED_MS, "test", None, f"1732400000500#{i}", lookup)
        for i, item in enumerate(G["liquidation_two"]["result"])
    )
    assert sell == Liquidation(
        exchange="gate",
        symbol="BTC_USDT",
        side=Side.LONG,
        quantity=Decimal("0.25"),
        price=Decimal("97012.5"),
        value_usd=Decimal("24253.125"),
        time_ms=1732400000321,
        received_ms=RECEIVED_MS,
        raw_side="size<0",
        source="test",
        sampled=True,
        key=dedup_key_of_texts("gate", "BTC_USDT", 1732400000321, Side.LONG, "97012.5", "2500", "1732400000500#0"),
    )
    assert buy == Liquidation(
        exchange="gate",
        symbol="BTC_USDT",
        side=Side.SHORT,
        quantity=Decimal("0.004"),
        price=Decimal("97655"),
        value_usd=Decimal("390.62"),
        time_ms=1732400000377,
        received_ms=RECEIVED_MS,
        raw_side="size>0",
        source="test",
        sampled=True,
        key=dedup_key_of_texts("gate", "BTC_USDT", 1732400000377, Side.SHORT, "97655", "40", "1732400000500#1"),
    )


def test_a_large_multiplier_coin_and_string_numbers() -> None:
    [event] = _liquidations(_adapter().handle(frame_text("gate", "liquidation_pepe"), RECEIVED_MS))
    assert (event.symbol, event.side, event.quantity, event.price, event.value_usd) == (
        "PEPE_USDT",
        Side.LONG,
        Decimal("30000000"),
        Decimal("0.00001234"),
        Decimal("370.2"),
    )


def test_json_numbers_are_read_as_plain_decimals() -> None:
    """Gate writes `price` as a JSON number: a float in E notation is read in plain notation."""
    [event] = _liquidations(_adapter().handle(_item(price=1e-05, size=-3.0), RECEIVED_MS))
    assert (event.quantity, event.price, event.value_usd) == (Decimal("30000000"), Decimal("0.00001"), Decimal("300"))


def test_fill_price_and_order_size_are_read_when_an_item_carries_them() -> None:
    """REST liq_orders' fields: `size` is then the position, `order_size` the order (its sign the side)."""
    item = {"contract": "BTC_USDT", "size": 30, "order_size": -30, "price": "96000", "fill_price": "96100.5"}
    event = parse_liquidation({**item, "time_ms": 1732400000321}).to_event(RECEIVED_MS, "test", None, "", lookup)
    assert (event.side, event.quantity, event.price, event.value_usd) == (
        Side.LONG,
        Decimal("0.003"),
        Decimal("96100.5"),
        Decimal("288.3015"),
    )


def test_unknown_contracts_are_dropped_as_unknown_instrument_and_the_rest_kept() -> None:
    adapter = _adapter()
    events = _liquidations(adapter.handle(frame_text("gate", "liquidation_mixed"), RECEIVED_MS))
    assert [(e.symbol, e.side, e.quantity, e.value_usd) for e in events] == [
        ("ETH_USDT", Side.SHORT, Decimal("0.12"), Decimal("418.338")),
        ("BTC_USDT", Side.LONG, Decimal("0.0001"), Decimal("9.7")),
    ]
    assert adapter.health.drops == {"unknown_instrument": 1}


def test_candles_are_in_base_units_and_quote_volume_is_estimated_at_the_close() -> None:
    adapter = _adapter()
    [open_candle] = adapter.handle(frame_text("gate", "candle_open"), RECEIVED_MS)
    assert open_candle == Candle(
        exchange="gate",
        symbol="BTC_USDT",
        open_ms=1732400000000,
        open=Decimal("97300"),
        high=Decimal("97410"),
        low=Decimal("97150.2"),
        close=Decimal("97210.1"),
        volume=Decimal("388.21"),
        quote_volume=Decimal("388.21") * Decimal("97210.1"),
        closed=False,
        received_ms=RECEIVED_MS,
        source="test",
    )
    [closed] = adapter.handle(frame_text("gate", "candle_closed"), RECEIVED_MS)
    assert isinstance(closed, Candle) and (closed.closed, closed.close, closed.volume) == (
        True,
        Decimal("97222.4"),
        Decimal("399"),
    )
    unknown = json.loads(frame_text("gate", "candle_open"))
    unknown["result"][0]["n"] = "1m_NOPE_USDT"
    assert adapter.handle(json.dumps(unknown), RECEIVED_MS) == []
    assert adapter.health.drops == {"unknown_instrument": 1}


def test_twins_in_one_frame_keep_two_keys_and_a_resent_frame_the_same_ones() -> None:
    twin = {"price": "97012.5", "size": -2500, "time_ms": 1732400000321, "contract": "BTC_USDT"}
    frame = json.dumps(
        {"channel": "futures.public_liquidates", "event": "update", "time_ms": 1732400000500, "result": [twin, twin]}
    )
    adapter = _adapter()
    first = _liquidations(adapter.handle(frame, RECEIVED_MS))
    again = _liquidations(adapter.handle(frame, RECEIVED_MS + 5000))
    assert len(first) == 2 and first[0].key != first[1].key
    assert [e.key for e in again] == [e.key for e in first]
    later = json.loads(frame)
    later["time_ms"] = 1732400001500  # the same item in the next push is another liquidation
    moved = _liquidations(adapter.handle(json.dumps(later), RECEIVED_MS))
    assert len(moved) == 2 and {e.key for e in moved}.isdisjoint({e.key for e in first})


@pytest.mark.parametrize("pushed", [{"time_ms": 1732400000500}, {}], ids=["push time", "no push time"])
def test_the_typed_path_keys_every_item_as_the_general_path_does(pushed: dict[str, int]) -> None:
    """The typed path writes the item index from a table up to 64 and by formatting past it; a frame
    with an escape in its text goes the general way (`clean_frame`): one key rule for both."""
    items = [
        {"price": "97012.5", "size": -2500 + i, "time_ms": 1732400000321, "contract": "BTC_USDT"} for i in range(70)
    ]
    update = {"channel": "futures.public_liquidates", "event": "update", **pushed, "result": items}
    typed_raw, general_raw = json.dumps(update), json.dumps({**update, "note": "\u00e9"})  # written as an escape
    assert clean_frame(typed_raw) and not clean_frame(general_raw)
    typed = _liquidations(_adapter().handle(typed_raw, RECEIVED_MS))
    general = _liquidations(_adapter().handle(general_raw, RECEIVED_MS))
    assert len(typed) == len(general) == 70 and len({e.key for e in typed}) == 70
    assert [e.key for e in typed] == [e.key for e in general]
    where = f"{pushed.get('time_ms', '')}#65"
    assert typed[65].key == dedup_key_of_texts(
        "gate", "BTC_USDT", 1732400000321, typed[65].side, "97012.5", "2435", where
    )


def test_good_items_survive_bad_ones_in_the_same_frame() -> None:
    frame = json.loads(frame_text("gate", "liquidation_mixed"))
    frame["result"][0]["size"] = "NaN"
    frame["result"][1] = {"price": 1.5, "size": 0, "time_ms": 1732400001910, "contract": "BTC_USDT"}
    del frame["result"][2]["time_ms"]
    frame["result"].append({"price": 97000.0, "size": -3, "time_ms": 1732400001930, "contract": "BTC_USDT"})
    adapter = _adapter()
    events = _liquidations(adapter.handle(json.dumps(frame), RECEIVED_MS))
    assert [(e.time_ms, e.quantity, e.price) for e in events] == [(1732400001930, Decimal("0.0003"), Decimal("97000"))]
    assert adapter.health.drops == {"bad_number": 1, "bad_value": 1, "missing_field": 1}


def _item(**fields: object) -> str:
    frame = json.loads(frame_text("gate", "liquidation_pepe"))
    frame["result"][0].update(fields)
    return json.dumps(frame)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "bad_json"),
        ("[1]", "bad_json"),
        ('{"channel":"futures.trades","event":"update","result":[]}', "unknown_message"),
        ('{"hello":"world"}', "unknown_message"),
        ('{"channel":"futures.public_liquidates","event":"update"}', "missing_field"),
        ('{"channel":"futures.public_liquidates","event":"update","result":{"size":1}}', "bad_field"),
        ('{"channel":"futures.public_liquidates","event":"update","result":[7]}', "bad_field"),
        (_item(time_ms=1732400001100.5), "bad_field"),
        (_item(size=True), "bad_field"),
        (_item(size="+3"), "bad_number"),
        (_item(size="--3"), "bad_number"),
        (_item(size=1e400), "bad_number"),
        (_item(price="-0.1"), "bad_number"),
        (_item(size=-4, price="1e5"), "bad_number"),
        (_item(size="-100000000000", price="1000"), "bad_value"),
        (_item(contract="BTC USDT"), "bad_symbol"),
        (_item(time_ms=RECEIVED_MS + 400_000), "future_time"),
        (
            '{"channel":"futures.candlesticks","event":"update","result":[{"t":1732400000,"v":1,"c":"1",'
            '"h":"1","l":"2","o":"1","n":"1m_BTC_USDT"}]}',
            "bad_value",
        ),
        (
            '{"channel":"futures.candlesticks","event":"update","result":[{"t":1732400000,"v":1,"c":"1",'
            '"h":"1","l":"1","o":"1","n":"5m_BTC_USDT"}]}',
            "unknown_message",
        ),
    ],
)
def test_bad_frames_are_dropped_with_a_reason(raw: str | bytes, reason: str) -> None:
    adapter = _adapter()
    assert adapter.handle(raw, RECEIVED_MS) == []
    assert adapter.health.drops == {reason: 1}


def test_acks_confirm_pongs_are_not_data_and_a_refusal_costs_only_what_it_names() -> None:
    adapter = _adapter(symbols="BTC_USDT,NOPE_USDT")
    [shard] = adapter.shards
    adapter.current = shard
    assert adapter.subscribe(shard) is False
    sent = [json.loads(m) for m in shard.outbox]
    assert [(m["id"], m["channel"], m["payload"]) for m in sent] == [
        (1, "futures.public_liquidates", ["BTC_USDT", "NOPE_USDT"]),
        (2, "futures.candlesticks", ["1m", "BTC_USDT"]),
        (3, "futures.candlesticks", ["1m", "NOPE_USDT"]),
    ]
    shard.outbox.clear()
    adapter.handle(frame_text("gate", "subscribe_ack").replace('"id":1', '"id":2'), RECEIVED_MS)
    assert shard.active == {"futures.candlesticks.1m.BTC_USDT"}
    assert adapter.handle(frame_text("gate", "subscribe_refused"), RECEIVED_MS) == []
    assert adapter.refused == {"futures.public_liquidates.NOPE_USDT": "unknown contract NOPE_USDT"}
    [again] = [json.loads(m) for m in shard.outbox]
    assert (again["channel"], again["payload"]) == ("futures.public_liquidates", ["BTC_USDT"])
    assert adapter.handle(frame_text("gate", "pong"), RECEIVED_MS) == []
    assert not adapter.health.drops and adapter.health.refusals == 1


class QuickGate(GateAdapter):
    ping_interval_s: ClassVar[float | None] = 0.1


async def test_live_explicit_list_subscribes_receives_pings_and_reconnects() -> None:
    async with FakeGateServer() as srv:
        settings = adapter_settings(LIQ_EXCHANGES="gate", LIQ_SYMBOLS="BTC_USDT,ETH_USDT")
        run = Running(QuickGate, srv.url, settings)
        run.adapter.instrument_of = lookup
        async with run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 1)
            assert srv.streams_of_all() == [
                {
                    "futures.public_liquidates.BTC_USDT",
                    "futures.public_liquidates.ETH_USDT",
                    "futures.candlesticks.1m.BTC_USDT",
                    "futures.candlesticks.1m.ETH_USDT",
                }
            ]
            assert await srv.push(G["liquidation_mixed"]) == 1  # NOPE_USDT is not sent: not subscribed
            assert await srv.push(G["candle_open"]) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 2 and len(run.candles()) == 1)
            await srv.wait_for(lambda: srv.pings >= 2)
            await srv.drop_all(1011)
            await srv.wait_connected(2)
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            assert await srv.push(G["liquidation_two"]) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 4)
        assert run.health.reconnects == 1 and not run.health.drops
        assert [(e.symbol, e.side) for e in run.liquidations()] == [
            ("ETH_USDT", Side.SHORT),
            ("BTC_USDT", Side.LONG),
            ("BTC_USDT", Side.LONG),
            ("BTC_USDT", Side.SHORT),
        ]


async def test_live_whole_market_takes_every_contract_from_all_and_a_refused_contract_is_remembered() -> None:
    async with FakeGateServer() as srv:
        srv.refuse = {"NOPE_USDT"}
        settings = adapter_settings(LIQ_EXCHANGES="gate", LIQ_SYMBOLS="ALL")
        run = Running(GateAdapter, srv.url, settings, symbols=["BTC_USDT", "ETH_USDT", "NOPE_USDT"])
        run.adapter.instrument_of = lookup
        async with run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            assert sorted(srv.streams_of_all(), key=len) == [
                {"futures.public_liquidates.!all"},
                {"futures.candlesticks.1m.BTC_USDT", "futures.candlesticks.1m.ETH_USDT"},
            ]
            assert run.adapter.refused == {"futures.candlesticks.1m.NOPE_USDT": "unknown contract NOPE_USDT"}
            assert await srv.push(G["liquidation_mixed"]) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 2)
            await run.wait_for(lambda: run.health.drops == {"unknown_instrument": 1})
        assert {e.symbol for e in run.liquidations()} == {"BTC_USDT", "ETH_USDT"}
        assert run.health.refusals == 1


def test_default_url_a_reply_without_id_and_an_unsubscribe_on_delisting() -> None:
    settings = adapter_settings(LIQ_EXCHANGES="gate", LIQ_SYMBOLS="BTC_USDT,ETH_USDT")
    adapter = GateAdapter(settings, asyncio.Queue(), StreamHealth("gate", "live"))
    assert adapter.url == "wss://fx-ws.gateio.ws/v4/ws/usdt" and adapter.source == "live"
    [shard] = adapter.shards
    adapter.current = shard
    adapter.subscribe(shard)
    reply = json.loads(frame_text("gate", "subscribe_ack"))
    del reply["id"]  # matched to the oldest request of its channel
    adapter.handle(json.dumps(reply), RECEIVED_MS)
    assert shard.active == {"futures.public_liquidates.BTC_USDT", "futures.public_liquidates.ETH_USDT"}
    assert list(shard.pending) == ["2", "3"]
    shard.open, shard.outbox = True, []
    adapter.remove_symbols(["ETH_USDT"])
    [unsubscribe] = [json.loads(m) for m in shard.outbox]
    assert (unsubscribe["event"], unsubscribe["payload"]) == ("unsubscribe", ["ETH_USDT"])
    assert json.loads(adapter.ping_message())["channel"] == "futures.ping"
