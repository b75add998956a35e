"""The catalog over the fake venues and a real TimescaleDB: start-up rule, refresh diffs, retries, warnings."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from collector.exchanges.gate import GateAdapter
from collector.exchanges.okx import OkxAdapter
from collector.health import StreamHealth
from collector.instruments.base import Listing
from collector.instruments.catalog import Diff, Fetch, InstrumentCatalog
from collector.instruments.store import InstrumentStore
from common.config import Settings
from common.instruments import CONTRACTS, guess_instrument
from tests import services
from tests.exchanges.harness import RECEIVED_MS, adapter_settings
from tests.fakes.rest import (
    FakeBinanceRest,
    FakeBybitRest,
    binance_market,
    binance_symbol,
    bybit_instrument,
    bybit_market,
)
from tests.storage.helpers import wait_until


@pytest.fixture
def binance_rest() -> Iterator[FakeBinanceRest]:
    with FakeBinanceRest(binance_market(300)) as fake:
        yield fake


@pytest.fixture
def bybit_rest() -> Iterator[FakeBybitRest]:
    with FakeBybitRest(bybit_market(400), page_size=150) as fake:
        yield fake


def _settings(db: str, tmp: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest, **env: str) -> Settings:
    return services.make_settings(
        db,
        "liqtest:catalog:",
        tmp,
        LIQ_BINANCE_REST_URL=binance_rest.url,
        LIQ_BYBIT_REST_URL=bybit_rest.url,
        **{"LIQ_SYMBOLS": "ALL", **env},
    )


def _catalog(settings: Settings, **kw: float) -> InstrumentCatalog:
    kw = {"request_timeout_s": 2.0, **kw}
    return InstrumentCatalog(settings, store=InstrumentStore.from_settings(settings), **kw)  # type: ignore[arg-type]


def _symbols(items: list[dict[str, object]]) -> list[str]:
    return sorted(str(i["symbol"]) for i in items)


def _delisted(db: str) -> dict[str, list[str]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT exchange, symbol FROM instruments WHERE delisted_at IS NOT NULL ORDER BY exchange, symbol"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for exchange, symbol in rows:
        out.setdefault(exchange, []).append(symbol)
    return out


async def test_refresh_reports_listings_and_delistings(
    clean_db: str, tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest
) -> None:
    catalog = _catalog(_settings(clean_db, tmp_path, binance_rest, bybit_rest))
    first = await catalog.start()
    assert sorted(first.listed["binance"]) == _symbols(binance_rest.symbols)
    assert sorted(first.listed["bybit"]) == _symbols(bybit_rest.instruments) and first.delisted == {}
    assert catalog.symbols("bybit") == _symbols(bybit_rest.instruments)
    assert catalog.state()["bybit"]["source"] == "rest" and catalog.state()["bybit"]["instruments"] == 400

    gone = [i["symbol"] for i in binance_rest.symbols[10:13]]
    binance_rest.symbols = binance_rest.symbols[:10] + binance_rest.symbols[13:] + [binance_symbol("NEWUSDT", "NEW")]
    bybit_rest.instruments.append(bybit_instrument("1000PEPEUSDT", "1000PEPE"))
    diff = await catalog.refresh()
    assert diff == Diff(listed={"binance": ("NEWUSDT",), "bybit": ("1000PEPEUSDT",)}, delisted={"binance": tuple(gone)})
    assert "NEWUSDT" in catalog.symbols("binance") and gone[0] not in catalog.symbols("binance")
    assert catalog.lookup("bybit", "1000PEPEUSDT").multiplier == 1000
    old = catalog.lookup("binance", gone[0])  # delisted while running: known, no longer listed
    assert (old.base, old.listed, old.status) == (gone[0].removesuffix("USDT"), False, "delisted")
    assert _delisted(clean_db) == {"binance": sorted(gone)}
    assert await catalog.refresh() == Diff()  # nothing changed, nothing to do


async def test_a_failing_venue_keeps_its_last_list(
    clean_db: str, tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest
) -> None:
    catalog = _catalog(_settings(clean_db, tmp_path, binance_rest, bybit_rest))
    await catalog.start()
    bybit_rest.mode, bybit_rest.fail_from = "error", bybit_rest.count + 2  # the second page fails
    bybit_rest.instruments = bybit_rest.instruments[:50]
    binance_rest.symbols.append(binance_symbol("NEWUSDT", "NEW"))
    assert await catalog.refresh() == Diff(listed={"binance": ("NEWUSDT",)})
    state = catalog.state()["bybit"]
    assert state["source"] == "rest" and state["instruments"] == 400 and state["failures"] == 1
    assert "HTTP 500" in state["error"] and len(catalog.symbols("bybit")) == 400
    assert _delisted(clean_db) == {}


async def test_rest_down_at_start_starts_on_the_stored_list_and_says_so(
    clean_db: str,
    tmp_path: Path,
    binance_rest: FakeBinanceRest,
    bybit_rest: FakeBybitRest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(clean_db, tmp_path, binance_rest, bybit_rest)
    await _catalog(settings).start()  # an earlier run stored both lists
    binance_rest.mode = bybit_rest.mode = "error"
    caplog.set_level(logging.WARNING, "collector.instruments")
    catalog = _catalog(settings)
    first = await catalog.start()
    assert sorted(first.listed["bybit"]) == _symbols(bybit_rest.instruments)
    state = catalog.state()
    assert state["bybit"]["source"] == state["binance"]["source"] == "database"
    assert state["bybit"]["instruments"] == 400 and state["bybit"]["stored_ms"] > 0
    assert "HTTP 500" in state["bybit"]["error"]
    assert "bybit: REST unreachable at start: starting on the 400 instruments stored at" in caplog.text

    binance_rest.mode = bybit_rest.mode = "ok"
    bybit_rest.instruments = bybit_rest.instruments[1:]
    diff = await catalog.refresh()
    assert diff == Diff(delisted={"bybit": (bybit_market(1)[0]["symbol"],)})
    assert catalog.state()["bybit"]["source"] == "rest" and catalog.state()["bybit"]["error"] == ""


async def test_with_no_list_at_all_it_serves_nothing_and_keeps_retrying(
    clean_db: str,
    tmp_path: Path,
    binance_rest: FakeBinanceRest,
    bybit_rest: FakeBybitRest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    binance_rest.mode, bybit_rest.mode = "error", "garbage"
    caplog.set_level(logging.WARNING, "collector.instruments")
    catalog = _catalog(_settings(clean_db, tmp_path, binance_rest, bybit_rest), retry_base_s=0.05, retry_cap_s=0.2)
    changes: list[Diff] = []
    stop = asyncio.Event()
    task = asyncio.create_task(catalog.run(stop, changes.append))
    await wait_until(lambda: binance_rest.count >= 4 and bybit_rest.count >= 4, 20, "four attempts each")
    state = catalog.state()
    assert state["binance"]["source"] == state["bybit"]["source"] == "none"
    assert state["bybit"]["error"].startswith("not JSON") and state["binance"]["failures"] >= 3
    assert catalog.symbols("binance") == catalog.symbols("bybit") == [] and changes == []
    guessed = catalog.lookup("binance", "1000PEPEUSDT")
    assert (guessed.base, guessed.multiplier, guessed.listed) == ("PEPE", 1000, False)
    assert "binance: no instrument list from REST or the database: following nothing; retrying" in caplog.text

    binance_rest.mode = bybit_rest.mode = "ok"
    await wait_until(lambda: sum(len(d.listed) for d in changes) == 2, 20, "both venues listed")
    listed = {e: s for diff in changes for e, s in diff.listed.items()}
    assert sorted(listed["binance"]) == _symbols(binance_rest.symbols)
    assert sorted(listed["bybit"]) == _symbols(bybit_rest.instruments)
    assert catalog.state()["bybit"]["source"] == "rest"
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_an_explicit_symbol_a_venue_does_not_list_is_a_warning_naming_it(
    clean_db: str,
    tmp_path: Path,
    binance_rest: FakeBinanceRest,
    bybit_rest: FakeBybitRest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    binance_rest.symbols.append(binance_symbol("BTCUSDT", "BTC"))
    bybit_rest.instruments += [bybit_instrument("BTCUSDT", "BTC"), bybit_instrument("BTCPERP", "BTC", "USDC")]
    settings = _settings(
        clean_db,
        tmp_path,
        binance_rest,
        bybit_rest,
        LIQ_SYMBOLS="btcperp,BTCUSDT,NOSUCHUSDT",
        LIQ_CANDLE_SYMBOLS="BTCUSDT",
    )
    caplog.set_level(logging.WARNING, "collector.instruments")
    catalog = _catalog(settings)
    await catalog.start()
    assert catalog.symbols("binance") == ["BTCUSDT"]
    assert catalog.symbols("bybit") == ["BTCPERP", "BTCUSDT"]
    assert catalog.candle_symbols("bybit") == ["BTCUSDT"]
    assert catalog.warnings() == [
        "binance does not list BTCPERP, NOSUCHUSDT: named in LIQ_SYMBOLS, not followed there",
        "bybit does not list NOSUCHUSDT: named in LIQ_SYMBOLS, not followed there",
    ]
    assert catalog.state()["binance"]["unlisted"] == ["BTCPERP", "NOSUCHUSDT"]
    assert "bybit does not list NOSUCHUSDT" in caplog.text

    bybit_rest.instruments.append(bybit_instrument("NOSUCHUSDT", "NOSUCH"))  # listed at last
    assert await catalog.refresh() == Diff(listed={"bybit": ("NOSUCHUSDT",)})
    assert catalog.state()["bybit"]["unlisted"] == [] and len(catalog.warnings()) == 1


async def test_an_explicit_list_without_any_instrument_list_is_served_unverified(
    clean_db: str, tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest
) -> None:
    binance_rest.mode = bybit_rest.mode = "hang"
    settings = _settings(clean_db, tmp_path, binance_rest, bybit_rest, LIQ_SYMBOLS="BTCUSDT,ETHUSDT")
    catalog = _catalog(settings, request_timeout_s=0.3)
    first = await catalog.start()
    assert first.listed == {"binance": ("BTCUSDT", "ETHUSDT"), "bybit": ("BTCUSDT", "ETHUSDT")}
    assert catalog.state()["binance"]["source"] == "none" and catalog.warnings() == []
    assert "no complete answer within 0.3 s" in catalog.state()["binance"]["error"]

    binance_rest.mode = bybit_rest.mode = "ok"
    binance_rest.symbols.append(binance_symbol("ETHUSDT", "ETH"))
    # The 0.3 s above only had to expire; an answer on a loaded CI machine may take longer than that.
    catalog._timeout = 10.0
    diff = await catalog.refresh()  # verified now: neither venue lists BTCUSDT, bybit no ETHUSDT either
    assert diff == Diff(delisted={"binance": ("BTCUSDT",), "bybit": ("BTCUSDT", "ETHUSDT")})
    assert catalog.symbols("binance") == ["ETHUSDT"]


async def test_a_list_that_drops_half_the_market_waits_for_a_second_answer(
    clean_db: str, tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest
) -> None:
    catalog = _catalog(_settings(clean_db, tmp_path, binance_rest, bybit_rest, LIQ_EXCHANGES="binance"))
    await catalog.start()
    full = binance_rest.symbols
    binance_rest.symbols = full[:100]
    assert await catalog.refresh() == Diff()
    assert "held back a list without 200 of its 300" in catalog.state()["binance"]["error"]
    assert len(catalog.symbols("binance")) == 300 and _delisted(clean_db) == {}
    diff = await catalog.refresh()  # the same answer again: it is real
    assert len(diff.delisted["binance"]) == 200 and len(catalog.symbols("binance")) == 100
    assert len(_delisted(clean_db)["binance"]) == 200 and catalog.state()["binance"]["error"] == ""


async def test_run_refreshes_periodically_and_calls_back_with_each_change(
    clean_db: str, tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest
) -> None:
    catalog = _catalog(_settings(clean_db, tmp_path, binance_rest, bybit_rest), refresh_s=0.2)
    await catalog.start()
    changes: list[Diff] = []

    async def on_change(diff: Diff) -> None:
        changes.append(diff)

    stop = asyncio.Event()
    task = asyncio.create_task(catalog.run(stop, on_change))
    await asyncio.sleep(0.5)
    assert changes == [] and binance_rest.count >= 2  # refreshed, nothing changed
    bybit_rest.instruments.append(bybit_instrument("NEWUSDT", "NEW"))
    await wait_until(lambda: bool(changes), 10, "a change")
    assert changes == [Diff(listed={"bybit": ("NEWUSDT",)})]
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_database_that_is_down_does_not_stop_the_catalog(
    tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.e2e.own_servers import free_port

    settings = _settings(
        f"postgresql://liq@127.0.0.1:{free_port()}/liq",
        tmp_path,
        binance_rest,
        bybit_rest,
        LIQ_DB_CONNECT_TIMEOUT_S="1",
    )
    caplog.set_level(logging.WARNING, "collector.instruments")
    catalog = _catalog(settings)
    await catalog.start()
    assert len(catalog.symbols("binance")) == 300 and catalog.state()["binance"]["source"] == "rest"
    assert "binance: the instrument list was not stored (storing 300 binance instruments:" in caplog.text


async def test_a_hanging_venue_neither_delays_the_other_nor_the_stop(
    clean_db: str, tmp_path: Path, binance_rest: FakeBinanceRest, bybit_rest: FakeBybitRest
) -> None:
    settings = _settings(clean_db, tmp_path, binance_rest, bybit_rest)
    catalog = _catalog(settings, refresh_s=0.2, request_timeout_s=30)
    await catalog.start()
    binance_rest.mode = "hang"
    changes: list[Diff] = []
    stop = asyncio.Event()
    task = asyncio.create_task(catalog.run(stop, changes.append))
    await wait_until(lambda: binance_rest.count >= 2, 10, "binance asked again")  # and now hangs for 30 s
    bybit_rest.instruments.append(bybit_instrument("NEWUSDT", "NEW"))
    await wait_until(lambda: bool(changes), 10, "bybit's new listing")
    assert changes == [Diff(listed={"bybit": ("NEWUSDT",)})]
    stop.set()
    await asyncio.wait_for(task, 2)  # the binance request in flight is abandoned


async def test_an_explicit_symbol_names_its_contract_on_every_venue(clean_db: str, tmp_path: Path) -> None:
    """`BTCUSDT` in LIQ_SYMBOLS is BTC's USDT perpetual: OKX follows `BTC-USDT-SWAP`, Gate `BTC_USDT`;
    `1000PEPEUSDT` is OKX's `PEPE-USDT-SWAP` (one canonical PEPE-USDT-PERP); Gate's spelling
    `ETH_USDT` names ETH's USDT perpetual everywhere too; the USDC perpetual is not the USDT one."""
    lists = {
        "binance": ["BTCUSDT", "1000PEPEUSDT", "ETHUSDT"],
        "bybit": ["BTCUSDT", "BTCPERP", "1000PEPEUSDT"],
        "okx": ["BTC-USDT-SWAP", "BTC-USDC-SWAP", "PEPE-USDT-SWAP", "ETH-USDT-SWAP"],
        "gate": ["BTC_USDT", "ETH_USDT"],
        "bitget": ["ETHUSDT"],
    }

    def fetcher(exchange: str) -> Fetch:
        async def fetch(base_url: str, timeout_s: float) -> Listing:
            listing = Listing(exchange)
            for symbol in lists[exchange]:
                listing.add(dataclasses.replace(guess_instrument(exchange, symbol), listed=True))
            return listing

        return fetch

    settings = services.make_settings(
        clean_db,
        "liqtest:catalog:",
        tmp_path,
        LIQ_EXCHANGES="binance,bybit,okx,gate,bitget",
        LIQ_SYMBOLS="BTCUSDT,1000PEPEUSDT,ETH_USDT",
        LIQ_CANDLE_SYMBOLS="BTCUSDT",
    )
    catalog = InstrumentCatalog(settings, fetchers={name: fetcher(name) for name in lists})
    await catalog.start()
    assert {name: catalog.symbols(name) for name in lists} == {
        "binance": ["BTCUSDT", "1000PEPEUSDT", "ETHUSDT"],
        "bybit": ["BTCUSDT", "1000PEPEUSDT"],  # not BTCPERP: BTC-USDC-PERP is another contract
        "okx": ["BTC-USDT-SWAP", "PEPE-USDT-SWAP", "ETH-USDT-SWAP"],  # not BTC-USDC-SWAP
        "gate": ["BTC_USDT", "ETH_USDT"],
        "bitget": ["ETHUSDT"],
    }
    assert {name: catalog.candle_symbols(name) for name in lists} == {
        "binance": ["BTCUSDT"],
        "bybit": ["BTCUSDT"],
        "okx": ["BTC-USDT-SWAP"],
        "gate": ["BTC_USDT"],
        "bitget": [],
    }
    assert catalog.warnings() == [
        "bybit does not list ETH_USDT: named in LIQ_SYMBOLS, not followed there",
        "gate does not list 1000PEPEUSDT: named in LIQ_SYMBOLS, not followed there",
        "bitget does not list BTCUSDT, 1000PEPEUSDT: named in LIQ_SYMBOLS, not followed there",
    ]


async def test_a_new_list_reaches_the_contract_venues_memo_of_checked_instruments() -> None:
    """OKX and Gate remember the instruments they checked (`ExchangeAdapter.contracts`): a refresh
    that changes a contract's size, or delists it, is what the next liquidation is read with."""
    sizes = {"gate": {"BTC_USDT": Decimal("0.0001"), "ETH_USDT": Decimal("0.01")}}
    sizes["okx"] = {"BTC-USDT-SWAP": Decimal("0.01"), "ETH-USDT-SWAP": Decimal("0.1")}

    def fetcher(exchange: str) -> Fetch:
        async def fetch(base_url: str, timeout_s: float) -> Listing:
            listing = Listing(exchange)
            for symbol, size in sizes[exchange].items():
                known = guess_instrument(exchange, symbol)
                listing.add(dataclasses.replace(known, listed=True, size_unit=CONTRACTS, contract_size=size))
            return listing

        return fetch

    settings = adapter_settings(LIQ_EXCHANGES="okx,gate", LIQ_SYMBOLS="ALL", LIQ_NONLIVE_SOURCE="test")
    catalog = InstrumentCatalog(settings, fetchers={name: fetcher(name) for name in sizes})
    await catalog.start()
    gate = GateAdapter(settings, asyncio.Queue(), StreamHealth("gate", "test"), url="ws://127.0.0.1:1/v4/ws/usdt")
    okx = OkxAdapter(settings, asyncio.Queue(), StreamHealth("okx", "test"), url="ws://127.0.0.1:1/ws/v5/public")
    for name, adapter in (("gate", gate), ("okx", okx)):
        adapter.instrument_of = catalog.lookup
        catalog.watch(name, adapter.contracts.clear)  # as the service wires them
    item = {"price": "97012.5", "size": -2500, "time_ms": 1732400000321, "contract": "BTC_USDT"}
    gate_frame = json.dumps({"channel": "futures.public_liquidates", "event": "update", "result": [item]})
    detail = {"bkPx": "97012.5", "posSide": "net", "side": "sell", "sz": "25", "ts": "1732400000321"}
    okx_frame = json.dumps(
        {"arg": {"channel": "liquidation-orders"}, "data": [{"details": [detail], "instId": "BTC-USDT-SWAP"}]}
    )

    def quantities() -> list[Decimal]:
        return [e.quantity for raw, a in ((gate_frame, gate), (okx_frame, okx)) for e in a.handle(raw, RECEIVED_MS)]

    assert quantities() == [Decimal("0.25"), Decimal("0.25")]
    assert list(gate.contracts) == ["BTC_USDT"] and list(okx.contracts) == ["BTC-USDT-SWAP"]
    assert quantities() == [Decimal("0.25"), Decimal("0.25")]  # from the memo
    sizes["gate"]["BTC_USDT"], sizes["okx"]["BTC-USDT-SWAP"] = Decimal("0.001"), Decimal("0.1")
    await catalog.refresh()
    assert gate.contracts == {} and okx.contracts == {}
    assert quantities() == [Decimal("2.5"), Decimal("2.5")]
    del sizes["gate"]["BTC_USDT"], sizes["okx"]["BTC-USDT-SWAP"]
    await catalog.refresh()  # delisted
    assert quantities() == []
    assert gate.health.drops["unknown_instrument"] == okx.health.drops["unknown_instrument"] == 1
    okx.instrument_of = guess_instrument  # a new lookup starts the memo over too
    assert okx.contracts == {}
