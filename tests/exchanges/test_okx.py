"""OKX v5: the parse step and the normalise step alone on captured-shape frames (exact objects,
contracts into base units), the dispatcher's acks and refusals, and a live adapter against the fake."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from collector.exchanges.connection import SessionEnded
from collector.exchanges.okx import (
    ALL_LIQUIDATIONS,
    OkxAdapter,
    OkxCandle,
    OkxLiquidation,
    business_url,
    decode,
    parse_candle,
    parse_liquidation,
    stream_arg,
)
from collector.health import StreamHealth
from common.events import Candle, Liquidation, Side
from common.instruments import CONTRACTS, DATED, PERPETUAL, Instrument, guess_instrument
from tests.exchanges.harness import RECEIVED_MS, Running, adapter_settings, frame_text, frames
from tests.fakes.okx import BUSINESS_PATH, PUBLIC_PATH, FakeOkxServer

X = frames("okx")


def _contract(symbol: str, base: str, quote: str, ct_val: str, expiry: str = "") -> Instrument:
    return Instrument(
        exchange="okx",
        symbol=symbol,
        base=base,
        quote=quote,
        contract_type=DATED if expiry else PERPETUAL,
        size_unit=CONTRACTS,
        contract_size=Decimal(ct_val),
        expiry=expiry,
        status="live",
    )


INSTRUMENTS = {
    i.symbol: i
    for i in (
        _contract("BTC-USDT-SWAP", "BTC", "USDT", "0.01"),
        _contract("ETH-USDT-SWAP", "ETH", "USDT", "0.1"),
        _contract("SOL-USDT-SWAP", "SOL", "USDT", "1"),
        _contract("BTC-USDT-251226", "BTC", "USDT", "0.01", "20251226"),
        _contract("BTC-USDC-SWAP", "BTC", "USDC", "0.0001"),
    )
}


def instrument_of(exchange: str, symbol: str) -> Instrument:
    return INSTRUMENTS.get(symbol) or guess_instrument(exchange, symbol)


def _adapter(symbols: str = "ALL", url: str = "ws://127.0.0.1:1/ws/v5/public") -> OkxAdapter:
    settings = adapter_settings(LIQ_EXCHANGES="okx", LIQ_SYMBOLS=symbols)
    listed = list(INSTRUMENTS) if symbols == "ALL" else None
    health = StreamHealth("okx", settings.source_for(url))
    adapter = OkxAdapter(settings, asyncio.Queue(), health, url=url, symbols=listed)
    adapter.instrument_of = instrument_of
    return adapter


def _liquidations(events: list[Liquidation | Candle]) -> list[Liquidation]:
    return [e for e in events if isinstance(e, Liquidation)]


# -- parse, then normalise ---------------------------------------------------------------------


def test_parse_keeps_the_venue_fields() -> None:
    item = X["liquidation_sell_net"]["data"][0]
    assert parse_liquidation(item["instId"], item["details"][0]) == OkxLiquidation(
        instId="BTC-USDT-SWAP", side="sell", posSide="net", sz="25", bkPx="97012.5", ts="1732400000321"
    )
    msg = decode(frame_text("okx", "candle_open"))
    assert parse_candle(msg["data"][0], "BTC-USDT-SWAP") == OkxCandle(
        instId="BTC-USDT-SWAP",
        ts="1732400000000",
        o="97300",
        h="97410",
        l="97150.2",
        c="97210.1",
        vol="38821",
        volCcy="388.21",
        volCcyQuote="37766554.2",
        confirm="0",
    )


def test_sell_order_is_a_long_liquidation_in_base_units_whatever_pos_side_says() -> None:
    """`sell` closes a long; `posSide` reads `net` in net mode; 25 contracts x ctVal 0.01 = 0.25 BTC."""
    raw = OkxLiquidation("BTC-USDT-SWAP", "sell", "net", "25", "97012.5", "1732400000321")
    event = raw.to_event(RECEIVED_MS, "test", None, instrument_of)
    assert event == Liquidation(
        exchange="okx",
        symbol="BTC-USDT-SWAP",
        side=Side.LONG,
        quantity=Decimal("0.25"),
        price=Decimal("97012.5"),
        value_usd=Decimal("24253.125"),
        time_ms=1732400000321,
        received_ms=RECEIVED_MS,
        raw_side="sell",
        source="test",
        sampled=True,
    )
    # posSide never decides: the same order with posSide "long" or "short" is the same event.
    for pos_side in ("long", "short", ""):
        other = OkxLiquidation("BTC-USDT-SWAP", "sell", pos_side, "25", "97012.5", "1732400000321")
        assert other.to_event(RECEIVED_MS, "test", None, instrument_of) == event


def test_buy_order_is_a_short_liquidation() -> None:
    item = X["liquidation_buy_hedge"]["data"][0]
    event = parse_liquidation(item["instId"], item["details"][0]).to_event(RECEIVED_MS, "test", None, instrument_of)
    assert event == Liquidation(
        exchange="okx",
        symbol="ETH-USDT-SWAP",
        side=Side.SHORT,
        quantity=Decimal("1.3"),  # 13 contracts x 0.1 ETH
        price=Decimal("3301.5"),
        value_usd=Decimal("4291.95"),
        time_ms=1732400000377,
        received_ms=RECEIVED_MS,
        raw_side="buy",
        source="test",
        sampled=True,
    )


def test_a_dated_future_and_a_usdc_swap_convert_their_contracts() -> None:
    adapter = _adapter()
    [future] = adapter.handle(frame_text("okx", "liquidation_future"), RECEIVED_MS)
    assert isinstance(future, Liquidation)
    assert (future.symbol, future.side, future.quantity, future.price, future.value_usd) == (
        "BTC-USDT-251226",
        Side.SHORT,
        Decimal("0.03"),
        Decimal("98000.1"),
        Decimal("2940.003"),
    )
    [usdc] = adapter.handle(frame_text("okx", "liquidation_usdc"), RECEIVED_MS)
    assert isinstance(usdc, Liquidation)
    assert (usdc.symbol, usdc.side, usdc.quantity, usdc.value_usd, usdc.sampled) == (
        "BTC-USDC-SWAP",
        Side.LONG,
        Decimal("0.15"),  # 1500 x 0.0001 BTC
        Decimal("14550"),  # USDC at par
        True,
    )
    assert not adapter.health.drops


def test_one_frame_carries_several_contracts_and_details() -> None:
    events = _liquidations(_adapter().handle(frame_text("okx", "liquidation_many"), RECEIVED_MS))
    assert [(e.symbol, e.side, e.quantity, e.time_ms) for e in events] == [
        ("BTC-USDT-SWAP", Side.LONG, Decimal("0.1"), 1732400001011),
        ("BTC-USDT-SWAP", Side.SHORT, Decimal("0.04"), 1732400001102),
        ("ETH-USDT-SWAP", Side.LONG, Decimal("12"), 1732400001203),
        ("SOL-USDT-SWAP", Side.LONG, Decimal("7"), 1732400001304),
    ]
    assert len({e.key for e in events}) == 4


def test_candles_take_base_volume_from_vol_ccy_and_quote_volume_from_vol_ccy_quote() -> None:
    adapter = _adapter()
    [open_candle] = adapter.handle(frame_text("okx", "candle_open"), RECEIVED_MS)
    assert open_candle == Candle(
        exchange="okx",
        symbol="BTC-USDT-SWAP",
        open_ms=1732400000000,
        open=Decimal("97300"),
        high=Decimal("97410"),
        low=Decimal("97150.2"),
        close=Decimal("97210.1"),
        volume=Decimal("388.21"),  # volCcy: base currency (vol, 38821, is contracts)
        quote_volume=Decimal("37766554.2"),
        closed=False,
        received_ms=RECEIVED_MS,
        source="test",
    )
    [closed] = adapter.handle(frame_text("okx", "candle_closed"), RECEIVED_MS)
    assert isinstance(closed, Candle) and (closed.closed, closed.close, closed.volume) == (
        True,
        Decimal("97222.4"),
        Decimal("410.2"),
    )


def test_an_unknown_or_inverse_contract_is_dropped_not_guessed() -> None:
    adapter = _adapter()
    assert adapter.handle(frame_text("okx", "liquidation_inverse"), RECEIVED_MS) == []
    frame = json.loads(frame_text("okx", "liquidation_sell_net"))
    frame["data"][0]["instId"] = "NEW-USDT-SWAP"  # not in the list yet: a guess has no ctVal
    assert adapter.handle(json.dumps(frame), RECEIVED_MS) == []
    assert adapter.health.drops == {"unknown_instrument": 2}


def test_an_explicit_list_drops_other_contracts_quietly_but_counted() -> None:
    adapter = _adapter("BTC-USDT-SWAP")
    events = _liquidations(adapter.handle(frame_text("okx", "liquidation_many"), RECEIVED_MS))
    assert [e.symbol for e in events] == ["BTC-USDT-SWAP", "BTC-USDT-SWAP"]
    assert adapter.health.drops == {"not_followed": 2}


def test_good_details_survive_bad_ones_in_the_same_frame() -> None:
    frame = json.loads(frame_text("okx", "liquidation_many"))
    frame["data"][0]["details"][0]["sz"] = "NaN"
    frame["data"][0]["details"][1]["side"] = "hold"
    del frame["data"][1]["details"][0]["ts"]
    frame["data"][2]["details"] = "oops"
    adapter = _adapter()
    assert adapter.handle(json.dumps(frame), RECEIVED_MS) == []
    assert adapter.health.drops == {"bad_number": 1, "bad_value": 1, "missing_field": 1, "bad_field": 1}
    frame["data"].append(X["liquidation_sell_net"]["data"][0])
    assert len(adapter.handle(json.dumps(frame), RECEIVED_MS)) == 1


def _detail(**fields: object) -> str:
    frame = json.loads(frame_text("okx", "liquidation_sell_net"))
    frame["data"][0]["details"][0].update(fields)
    return json.dumps(frame)


def _row(index: int, value: object) -> str:
    frame = json.loads(frame_text("okx", "candle_open"))
    frame["data"][0][index] = value
    return json.dumps(frame)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "bad_json"),
        ('"text"', "bad_json"),
        ("ping", "bad_json"),
        ('{"arg":{"channel":"books5","instId":"BTC-USDT-SWAP"},"data":[]}', "unknown_message"),
        ('{"hello":"world"}', "unknown_message"),
        ('{"event":"login","code":"0"}', "unknown_message"),
        ('{"event":"subscribe","arg":"candle1m"}', "bad_field"),
        ('{"arg":{"channel":"liquidation-orders","instType":"SWAP"}}', "missing_field"),
        ('{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":{}}', "bad_field"),
        ('{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[7]}', "bad_field"),
        ('{"arg":{"channel":"candle1m"},"data":[]}', "bad_field"),
        (_detail(ts=1732400000321), "bad_field"),
        (_detail(ts="1732400000321.5"), "bad_field"),
        (_detail(sz=25), "bad_field"),
        (_detail(sz="0"), "bad_value"),
        (_detail(bkPx="-97012.5"), "bad_number"),
        (_detail(bkPx="1e5"), "bad_number"),
        (_detail(sz="2000000000", bkPx="97000"), "bad_value"),
        (_detail(ts=str(RECEIVED_MS + 400_000)), "future_time"),
        (_detail(ts="12"), "bad_value"),
        (_detail(side="Sell"), "bad_value"),
        (_detail(side="s\u200bell"), "bad_text"),
        (_row(8, "2"), "bad_value"),
        (_row(8, 1), "bad_field"),
        (_row(2, "97000"), "bad_value"),  # high below low
        (_row(6, "-1"), "bad_number"),
        ('{"arg":{"channel":"candle1m","instId":"BTC-USDT-SWAP"},"data":[["1732400000000","1"]]}', "bad_field"),
    ],
)
def test_bad_frames_are_dropped_with_a_reason(raw: str | bytes, reason: str) -> None:
    adapter = _adapter()
    assert adapter.handle(raw, RECEIVED_MS) == []
    assert adapter.health.drops == {reason: 1}


def test_stale_times_are_dropped_only_on_live_streams() -> None:
    late = RECEIVED_MS + 3600 * 1000 + 1
    live = _adapter(url="wss://ws.okx.com:8443/ws/v5/public")
    assert live.source == "live"
    assert live.handle(frame_text("okx", "liquidation_many"), late) == []
    assert live.health.drops == {"stale_time": 4}
    assert len(_adapter().handle(frame_text("okx", "liquidation_many"), late)) == 4


def test_a_resent_liquidation_keeps_its_key() -> None:
    """The first message after subscribing repeats recent liquidations: no index or push time in the key."""
    adapter = _adapter()
    [first] = adapter.handle(frame_text("okx", "liquidation_sell_net"), RECEIVED_MS)
    frame = json.loads(frame_text("okx", "liquidation_many"))
    frame["data"][0]["details"].insert(0, X["liquidation_sell_net"]["data"][0]["details"][0])  # another position
    again = _liquidations(adapter.handle(json.dumps(frame), RECEIVED_MS + 5000))
    assert isinstance(first, Liquidation) and again[0].key == first.key
    assert len({e.key for e in again}) == 5


# -- streams, acks, refusals, pongs --------------------------------------------------------------


def test_streams_urls_and_subscribe_args() -> None:
    adapter = _adapter("BTC-USDT-SWAP,ETH-USDT-SWAP")
    liquidations, candles = adapter.shards
    assert list(liquidations.wanted) == ALL_LIQUIDATIONS and liquidations.fixed and liquidations.idle_ok
    assert list(candles.wanted) == ["candle1m:BTC-USDT-SWAP", "candle1m:ETH-USDT-SWAP"]
    assert adapter.connect_url(liquidations) == "ws://127.0.0.1:1/ws/v5/public"
    assert adapter.connect_url(candles) == "ws://127.0.0.1:1/ws/v5/business"
    assert business_url("wss://ws.okx.com:8443/ws/v5/public/") == "wss://ws.okx.com:8443/ws/v5/business"
    assert stream_arg("liquidation-orders:FUTURES") == {"channel": "liquidation-orders", "instType": "FUTURES"}
    assert adapter.subscribe(candles) is False
    [message] = [json.loads(m) for m in candles.outbox]
    assert message == {
        "op": "subscribe",
        "args": [
            {"channel": "candle1m", "instId": "BTC-USDT-SWAP"},
            {"channel": "candle1m", "instId": "ETH-USDT-SWAP"},
        ],
    }
    assert adapter.ping_message() == "ping"


def test_each_arg_is_acknowledged_alone_and_pongs_are_not_data() -> None:
    adapter = _adapter("BTC-USDT-SWAP")
    liquidations, candles = adapter.shards
    adapter.subscribe(liquidations)
    adapter.subscribe(candles)
    adapter.current = liquidations
    adapter.handle(frame_text("okx", "subscribe_ack_liquidations"), RECEIVED_MS)
    assert list(liquidations.pending) == ["+liquidation-orders:FUTURES"]
    assert liquidations.active == {"liquidation-orders:SWAP"}
    adapter.current = candles
    adapter.handle(frame_text("okx", "subscribe_ack_candle"), RECEIVED_MS)
    assert not candles.pending and candles.active == {"candle1m:BTC-USDT-SWAP"}
    assert adapter.handle("pong", RECEIVED_MS) == [] and adapter.handle(b"pong", RECEIVED_MS) == []
    assert adapter.handle(frame_text("okx", "notice"), RECEIVED_MS) == []
    assert not adapter.health.drops


def test_a_refused_stream_is_remembered_and_the_connection_carries_on() -> None:
    adapter = _adapter("BTC-USDT-SWAP,NOPE-USDT-SWAP")
    _, candles = adapter.shards
    adapter.subscribe(candles)
    adapter.current = candles
    assert adapter.handle(frame_text("okx", "error_not_found"), RECEIVED_MS) == []  # no SessionEnded
    assert list(adapter.refused) == ["candle1m:NOPE-USDT-SWAP"]
    assert adapter.refused["candle1m:NOPE-USDT-SWAP"].startswith("60018 Wrong URL or channel:candle1m")
    assert adapter.health.refusals == 1 and "candle1m:NOPE-USDT-SWAP" not in candles.wanted
    assert list(candles.pending) == ["+candle1m:BTC-USDT-SWAP"]
    # An invalid request quotes itself back: the streams it quotes are refused.
    assert adapter.handle(frame_text("okx", "error_invalid"), RECEIVED_MS) == []
    assert "candle1m:BTC-USDT-SWAP" in adapter.refused and not candles.pending


def test_an_error_naming_no_stream_ends_the_session() -> None:
    adapter = _adapter("BTC-USDT-SWAP,ETH-USDT-SWAP")
    _, candles = adapter.shards
    adapter.subscribe(candles)
    adapter.current = candles
    with pytest.raises(SessionEnded, match="60014"):
        adapter.handle(frame_text("okx", "error_too_frequent"), RECEIVED_MS)
    assert not adapter.refused
    # An error for a stream not awaited is no refusal of another one.
    assert adapter.handle(frame_text("okx", "error_not_found"), RECEIVED_MS) == []
    assert not adapter.refused and len(candles.pending) == 2 and not adapter.health.drops
    # With nothing pending, an error is counted and the connection carries on.
    candles.pending.clear()
    assert adapter.handle(frame_text("okx", "error_too_frequent"), RECEIVED_MS) == []
    assert adapter.health.drops == {"venue_error": 1}


# -- a live adapter against the fake -------------------------------------------------------------


class _FastOkx(OkxAdapter):
    ping_interval_s = 0.2
    backoff_initial_s = 0.05
    backoff_max_s = 0.2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instrument_of = instrument_of


async def test_live_subscribe_receive_refuse_ping_and_reconnect_dedup() -> None:
    async with FakeOkxServer(ping_interval=None) as srv:
        srv.refuse = {"candle1m:NOPE-USDT-SWAP"}
        srv.recent = [X["liquidation_sell_net"]]  # repeated to every new liquidation subscription
        settings = adapter_settings(LIQ_EXCHANGES="okx", LIQ_SYMBOLS="BTC-USDT-SWAP,ETH-USDT-SWAP,NOPE-USDT-SWAP")
        async with Running(_FastOkx, srv.url, settings) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 2)
            public, business = srv.peers_on(PUBLIC_PATH), srv.peers_on(BUSINESS_PATH)
            assert [p.streams for p in public] == [set(ALL_LIQUIDATIONS)]
            assert [p.streams for p in business] == [{"candle1m:BTC-USDT-SWAP", "candle1m:ETH-USDT-SWAP"}]
            assert list(run.adapter.refused) == ["candle1m:NOPE-USDT-SWAP"]
            await run.wait_for(lambda: len(run.liquidations()) == 1)  # the repeat after subscribing

            assert await srv.push(X["liquidation_many"]) == 1
            assert await srv.push(X["candle_open"]) == 1
            await run.wait_for(lambda: len(run.liquidations()) == 4 and len(run.candles()) == 1)
            assert run.health.drops == {"not_followed": 1}  # SOL is not in the list

            await run.wait_for(lambda: srv.pings >= 2)  # text pings, answered with text pongs
            assert not run.statuses("disconnected")

            await srv.drop_all(1011)
            await run.wait_for(lambda: len(run.statuses("connected")) == 4 and len(run.liquidations()) == 5)
            assert run.health.reconnects == 2
    keys = [e.key for e in run.liquidations()]
    assert len(keys) == 5 and len(set(keys)) == 4  # the re-sent first message has the key it had
    assert run.health.refusals == 1 and not any(r.startswith("bad") for r in run.health.drops)


async def test_whole_market_shards_candles_on_the_business_endpoint_and_follows_listings() -> None:
    symbols = [f"Q{i:03d}-USDT-SWAP" for i in range(250)]
    async with FakeOkxServer(ping_interval=None) as srv:
        settings = adapter_settings(LIQ_EXCHANGES="okx", LIQ_SYMBOLS="ALL")
        async with Running(_FastOkx, srv.url, settings, symbols=symbols) as run:
            await run.wait_for(lambda: len(run.statuses("connected")) == 3)
            assert [p.streams for p in srv.peers_on(PUBLIC_PATH)] == [set(ALL_LIQUIDATIONS)]
            assert sorted(len(p.streams) for p in srv.peers_on(BUSINESS_PATH)) == [50, 200]
            accepted = srv.accepted
            run.adapter.add_symbols(["QNEW-USDT-SWAP"])
            await run.wait_for(lambda: any("candle1m:QNEW-USDT-SWAP" in p.streams for p in srv.connections))
            run.adapter.remove_symbols(["Q000-USDT-SWAP"])
            await run.wait_for(lambda: not any("candle1m:Q000-USDT-SWAP" in p.streams for p in srv.connections))
            assert srv.accepted == accepted and not run.statuses("disconnected")
            assert run.health.snapshot()["topics"] == 252  # 250 candles and the two liquidation streams
