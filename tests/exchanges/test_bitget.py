"""Bitget UTA: the parse step and the normalise step alone, on captured-shape frames, to exact objects;
then the adapter live against the fake venue (subscribe, receive, refusal, ping/pong, reconnect, dedup)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import ClassVar

import pytest

from collector.exchanges.bitget import (
    ARGS_BYTES,
    MAX_STREAMS,
    BitgetAdapter,
    BitgetCandle,
    BitgetLiquidation,
    arg_of,
    decode,
    parse_candle,
    parse_liquidation,
    stream_of,
)
from collector.health import StreamHealth
from common.events import Candle, Liquidation, Side, dedup_key_of_texts
from tests.exchanges.harness import RECEIVED_MS, Running, adapter_settings, frame_text, frames
from tests.fakes.bitget import FakeBitgetServer, kline_push, liquidation_push

G = frames("bitget")
URL = "ws://127.0.0.1:1/v3/ws/public"
LIQ_USDT, LIQ_USDC = "liquidation.usdt-futures", "liquidation.usdc-futures"


def _adapter(symbols: str = "BTCUSDT,ETHUSDT", url: str = URL) -> BitgetAdapter:
    settings = adapter_settings(LIQ_SYMBOLS=symbols)
    return BitgetAdapter(settings, asyncio.Queue(), StreamHealth("bitget", settings.source_for(url)), url=url)


def _key(symbol: str, time_ms: int, side: Side, price: str, amount: str) -> int:
    return dedup_key_of_texts("bitget", symbol, time_ms, side, price, amount, "quote")


def _liq(symbol: str, side: Side, quantity: str, price: str, value: str, time_ms: int, raw: str) -> Liquidation:
    return Liquidation(
        exchange="bitget",
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        value_usd=Decimal(value),
        time_ms=time_ms,
        received_ms=RECEIVED_MS,
        raw_side=raw,
        source="test",
        sampled=True,
        key=_key(symbol, time_ms, side, price, value),
    )


# -- parse alone ---------------------------------------------------------------------------------


def test_parse_keeps_the_venue_fields() -> None:
    msg = decode(frame_text("bitget", "liquidation_two"))
    assert [parse_liquidation(item, "usdt-futures") for item in msg["data"]] == [
        BitgetLiquidation("usdt-futures", "BTCUSDT", "buy", "97012.5", "24253.125", "1732400000321"),
        BitgetLiquidation("usdt-futures", "ETHUSDT", "sell", "3450.25", "6900.5", "1732400000377"),
    ]
    assert parse_candle(G["kline_open"]["data"][0], "BTCUSDT", 1732400030012) == BitgetCandle(
        symbol="BTCUSDT",
        start="1732400000000",
        open="97300",
        high="97410",
        low="97150.2",
        close="97210.1",
        volume="388.21",
        turnover="37766554.2",
        ts=1732400030012,
    )


def test_streams_are_strings_and_args_are_built_from_them() -> None:
    kline = {"instType": "usdt-futures", "topic": "kline", "symbol": "BTCUSDT", "interval": "1m"}
    assert arg_of("kline.usdt-futures.BTCUSDT") == kline
    assert arg_of(LIQ_USDC) == {"instType": "usdc-futures", "topic": "liquidation"}
    assert stream_of(kline) == "kline.usdt-futures.BTCUSDT"
    assert stream_of({**kline, "interval": "5m"}) is None and stream_of("x") is None


# -- normalise alone -----------------------------------------------------------------------------


def test_buy_is_a_long_liquidation_and_sell_a_short_and_amount_is_quote() -> None:
    """The docs: side "buy Long position liquidation, sell Short position liquidation"; amount
    "Liquidation amount. Unit: quote coin." So value_usd = amount and quantity = amount / price."""
    buy, sell = (
        parse_liquidation(item, "usdt-futures").to_event(RECEIVED_MS, "test", None)
        for item in G["liquidation_two"]["data"]
    )
    assert buy == _liq("BTCUSDT", Side.LONG, "0.25", "97012.5", "24253.125", 1732400000321, "buy")
    assert sell == _liq("ETHUSDT", Side.SHORT, "2", "3450.25", "6900.5", 1732400000377, "sell")


def test_the_docs_sample_is_quote_amount_over_price() -> None:
    [item] = G["liquidation_doc"]["data"]
    event = parse_liquidation(item, "usdt-futures").to_event(1736371332500, "test", None)
    assert (event.side, event.value_usd, event.price) == (Side.LONG, Decimal("37.722858"), Decimal("89000"))
    assert event.quantity == Decimal("37.722858") / Decimal("89000")  # 0.000423852..., not 37.7 BTC
    assert abs(event.quantity * event.price - event.value_usd) < Decimal("1e-20")


def test_usdc_futures_are_valued_at_par_and_a_multiplier_coin_keeps_its_venue_unit() -> None:
    [usdc] = _adapter("ALL").handle(frame_text("bitget", "liquidation_usdc"), RECEIVED_MS)
    assert usdc == _liq("BTCPERP", Side.SHORT, "0.5", "97000", "48500", 1732400000321, "sell")
    [sats] = _adapter("ALL").handle(frame_text("bitget", "liquidation_multiplier"), RECEIVED_MS)
    # 25 USDT at 0.0125 per 1000SATS: 2000 venue units (the 1000 multiplier is not applied, as on Binance).
    assert sats == _liq("1000SATSUSDT", Side.LONG, "2000", "0.0125", "25", 1732400000321, "buy")


def test_klines_open_and_closed() -> None:
    adapter = _adapter()
    [open_candle] = adapter.handle(frame_text("bitget", "kline_open"), RECEIVED_MS)
    assert open_candle == Candle(
        exchange="bitget",
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
    [closed] = adapter.handle(frame_text("bitget", "kline_closed"), RECEIVED_MS)
    assert isinstance(closed, Candle) and (closed.closed, closed.close, closed.volume) == (
        True,
        Decimal("97222.4"),
        Decimal("412.5"),
    )


def test_an_explicit_list_drops_other_pairs_counted_as_not_followed() -> None:
    frame = json.loads(frame_text("bitget", "liquidation_two"))
    frame["data"].append({**frame["data"][0], "symbol": "XRPUSDT"})
    adapter = _adapter("BTCUSDT")
    events = adapter.handle(json.dumps(frame), RECEIVED_MS)
    assert [e.symbol for e in events if isinstance(e, Liquidation)] == ["BTCUSDT"]
    assert adapter.health.drops == {"not_followed": 2}
    adapter.add_symbols(["ETHUSDT"])
    assert len(adapter.handle(json.dumps(frame), RECEIVED_MS)) == 2
    assert len(_adapter("ALL").handle(json.dumps(frame), RECEIVED_MS)) == 3


def test_good_items_survive_bad_ones_in_the_same_frame() -> None:
    frame = json.loads(frame_text("bitget", "liquidation_two"))
    good = frame["data"][0]
    frame["data"] += [
        {**good, "amount": "NaN"},
        {**good, "side": "long"},
        {k: v for k, v in good.items() if k != "ts"},
        {**good, "ts": 1732400000321},
    ]
    adapter = _adapter()
    events = adapter.handle(json.dumps(frame), RECEIVED_MS)
    assert [e.symbol for e in events if isinstance(e, Liquidation)] == ["BTCUSDT", "ETHUSDT"]
    assert adapter.health.drops == {"bad_number": 1, "bad_value": 1, "missing_field": 1, "bad_field": 1}


def _item(**fields: object) -> str:
    frame = json.loads(frame_text("bitget", "liquidation_two"))
    frame["data"] = [{**frame["data"][0], **fields}]
    return json.dumps(frame)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "bad_json"),
        ('"text"', "bad_json"),
        ('{"hello":"world"}', "unknown_message"),
        ('{"arg":{"instType":"usdt-futures","topic":"books"},"data":[]}', "unknown_message"),
        ('{"arg":{"instType":"coin-futures","topic":"liquidation"},"data":[]}', "unknown_message"),
        ('{"arg":{"instType":"usdt-futures","topic":"liquidation"}}', "missing_field"),
        ('{"arg":{"instType":"usdt-futures","topic":"liquidation"},"data":{}}', "bad_field"),
        ('{"arg":{"instType":"usdt-futures","topic":"liquidation"},"data":[7]}', "bad_field"),
        (
            '{"arg":{"instType":"usdt-futures","topic":"kline","symbol":"BTCUSDT","interval":"5m"},"data":[]}',
            "unknown_message",
        ),
        ('{"arg":{"instType":"usdt-futures","topic":"kline","interval":"1m"},"ts":1,"data":[]}', "missing_field"),
        ('{"event":"login","code":0}', "unknown_message"),
        (_item(ts="1732400000911.5"), "bad_field"),
        (_item(ts="-1"), "bad_field"),
        (_item(amount=0.12), "bad_field"),
        (_item(amount="0"), "bad_value"),
        (_item(price="-97710"), "bad_number"),
        (_item(price="1e400"), "bad_number"),
        (_item(amount="20000000000"), "bad_value"),
        (_item(ts=str(RECEIVED_MS + 400_000)), "future_time"),
        (_item(ts="12"), "bad_value"),
        (_item(symbol="BTC USDT"), "bad_symbol"),
    ],
)
def test_bad_frames_are_dropped_with_a_reason(raw: str | bytes, reason: str) -> None:
    adapter = _adapter("ALL")
    assert adapter.handle(raw, RECEIVED_MS) == []
    assert adapter.health.drops == {reason: 1}


def test_stale_times_are_dropped_only_on_live_streams() -> None:
    late = RECEIVED_MS + 3600 * 1000 + 1
    live = _adapter("ALL", "wss://ws.bitget.com/v3/ws/public")
    assert live.handle(frame_text("bitget", "liquidation_two"), late) == []
    assert live.health.drops == {"stale_time": 2}
    assert len(_adapter("ALL").handle(frame_text("bitget", "liquidation_two"), late)) == 2


# -- requests and answers ------------------------------------------------------------------------


def test_layout_one_fixed_liquidation_shard_and_candle_shards_within_the_cap() -> None:
    symbols = ",".join(f"Q{i:03d}USDT" for i in range(120)) + ",BTCPERP"
    adapter = _adapter(symbols)
    fixed, *candles = adapter.shards
    assert fixed.fixed and fixed.idle_ok and list(fixed.wanted) == [LIQ_USDT, LIQ_USDC]
    assert [len(s.wanted) for s in candles] == [MAX_STREAMS, MAX_STREAMS, 21]
    assert "kline.usdc-futures.BTCPERP" in candles[-1].wanted  # its quote picks the product type


def test_requests_are_batched_by_size_and_each_topic_awaits_its_own_answer() -> None:
    adapter = _adapter()
    shard = adapter.shards[1]
    streams = [f"kline.usdt-futures.Q{i:03d}USDT" for i in range(100)]
    adapter.request(shard, True, streams)
    messages = [json.loads(m) for m in shard.outbox]
    assert len(messages) > 1 and all(len(json.dumps(m["args"])) <= ARGS_BYTES + 50 for m in messages)
    assert [stream_of(a) for m in messages for a in m["args"]] == streams
    assert {m["op"] for m in messages} == {"subscribe"} and len(shard.pending) == 100


def test_acks_confirm_each_topic_and_pongs_are_not_data() -> None:
    adapter = _adapter()
    fixed = adapter.shards[0]
    adapter.current = fixed
    assert adapter.subscribe(fixed) is False
    assert set(fixed.pending) == {f"subscribe:{LIQ_USDT}", f"subscribe:{LIQ_USDC}"}
    assert adapter.handle(frame_text("bitget", "subscribe_ack"), RECEIVED_MS) == []
    assert list(fixed.pending) == [f"subscribe:{LIQ_USDC}"] and fixed.active == {LIQ_USDT}
    assert adapter.handle("pong", RECEIVED_MS) == [] and adapter.handle(b"pong", RECEIVED_MS) == []
    assert adapter.ping_message() == "ping" and not adapter.health.drops


@pytest.mark.parametrize("with_arg", [True, False])
def test_a_refused_topic_is_remembered_and_the_connection_stays(with_arg: bool) -> None:
    adapter = _adapter("BTCUSDT,NOPEUSDT")
    shard = adapter.shards[1]
    adapter.current = shard
    adapter.subscribe(shard)
    refusal = json.loads(frame_text("bitget", "subscribe_refused"))
    if not with_arg:
        del refusal["arg"]
    assert adapter.handle(json.dumps(refusal), RECEIVED_MS) == []  # no SessionEnded
    reason = "30001 instType:usdt-futures,topic:kline,symbol:NOPEUSDT doesn't exist"
    assert adapter.refused == {"kline.usdt-futures.NOPEUSDT": reason} and adapter.health.refusals == 1
    assert list(shard.pending) == ["subscribe:kline.usdt-futures.BTCUSDT"]
    assert "kline.usdt-futures.NOPEUSDT" not in shard.wanted and not adapter.health.drops


def test_an_error_naming_nothing_pending_is_counted() -> None:
    adapter = _adapter()
    adapter.current = adapter.shards[0]
    assert adapter.handle('{"event":"error","code":"30002","msg":"illegal request"}', RECEIVED_MS) == []
    assert adapter.health.drops == {"venue_error": 1} and not adapter.refused


# -- live, against the fake venue ----------------------------------------------------------------


class _FastPing(BitgetAdapter):
    ping_interval_s: ClassVar[float | None] = 0.2


async def test_live_subscribe_receive_refusal_and_ping() -> None:
    async with FakeBitgetServer() as srv:
        srv.refuse = {"kline.usdt-futures.NOPEUSDT"}
        settings = adapter_settings(LIQ_SYMBOLS="BTCUSDT,NOPEUSDT")
        async with Running(_FastPing, srv.url, settings) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            assert sorted(sorted(p.streams) for p in srv.connections) == [
                ["kline.usdt-futures.BTCUSDT"],
                [LIQ_USDC, LIQ_USDT],
            ]
            assert run.adapter.refused == {
                "kline.usdt-futures.NOPEUSDT": "30001 instType:usdt-futures,topic:kline,symbol:NOPEUSDT doesn't exist"
            }
            item = {"symbol": "BTCUSDT", "side": "sell", "price": "100", "amount": "50", "ts": "1732400000321"}
            other = {**item, "symbol": "XRPUSDT"}
            assert await srv.push(liquidation_push("usdt-futures", 1732400001000, item, other)) == 1
            candle = {"start": "1732400000000", "open": "1", "high": "2", "low": "1", "close": "2"}
            kline = kline_push("BTCUSDT", 1732400030000, {**candle, "volume": "3", "turnover": "4.5"})
            assert await srv.push(kline) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 1 and len(run.candles()) == 1)
            await run.wait_for(lambda: srv.pings >= 2)
            await asyncio.sleep(0.3)  # a pong or two more: they are not data
        [liq] = run.liquidations()
        assert (liq.symbol, liq.side, liq.quantity, liq.value_usd) == ("BTCUSDT", Side.SHORT, Decimal("0.5"), 50)
        assert run.health.drops == {"not_followed": 1}
        assert run.health.refusals == 1 and run.health.reconnects == 0
        assert [s.reason for s in run.statuses("disconnected")] == ["shutdown", "shutdown"]


async def test_live_reconnect_resubscribes_and_a_resent_frame_dedups() -> None:
    async with FakeBitgetServer() as srv:
        settings = adapter_settings(LIQ_SYMBOLS="ALL")
        async with Running(BitgetAdapter, srv.url, settings, symbols=["BTCUSDT"]) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            one = {"symbol": "BTCUSDT", "side": "buy", "price": "97000", "amount": "9700", "ts": "1732400000321"}
            two = {**one, "side": "sell"}  # the largest short of the same second: another liquidation
            frame = liquidation_push("usdt-futures", 1732400001000, one, two)
            assert await srv.push(frame) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 2)
            await srv.drop_all(None)
            await run.wait_for(lambda: len(run.statuses("connected")) == 4, within=20)
            assert run.health.reconnects == 2
            assert await srv.push(frame) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 4)
    first, second, again_first, again_second = run.liquidations()
    assert first.key != second.key and (again_first.key, again_second.key) == (first.key, second.key)
    assert (first.side, second.side, first.quantity) == (Side.LONG, Side.SHORT, Decimal("0.1"))
    assert not run.health.drops


async def test_live_whole_market_shards_candles_and_follows_listings() -> None:
    symbols = [f"Q{i:03d}USDT" for i in range(120)]
    async with FakeBitgetServer() as srv:
        settings = adapter_settings(LIQ_SYMBOLS="ALL")
        async with Running(BitgetAdapter, srv.url, settings, symbols=symbols) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 4, within=20)
            assert sorted(len(p.streams) for p in srv.connections) == [2, 20, 50, 50]
            items = [
                {"symbol": s, "side": "buy", "price": "2", "amount": "1", "ts": str(1732400000000 + i)}
                for i, s in enumerate([*symbols, "NOTLISTEDUSDT"])
            ]
            assert await srv.push(liquidation_push("usdt-futures", 1732400001000, *items)) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 121)  # the whole market: nothing filtered
            accepted = srv.accepted
            run.adapter.add_symbols(["QNEWUSDT"])
            run.adapter.remove_symbols(["Q000USDT"])
            await run.wait_for(lambda: any("kline.usdt-futures.QNEWUSDT" in p.streams for p in srv.connections))
            await run.wait_for(lambda: not any("kline.usdt-futures.Q000USDT" in p.streams for p in srv.connections))
            await run.wait_for(lambda: run.health.snapshot()["topics"] == 122)
            assert srv.accepted == accepted and not run.statuses("disconnected") and not run.health.drops
