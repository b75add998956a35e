"""The `instruments` table: exact round trip, delisting and relisting, the reader's grant, deadlines."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from collector.instruments.store import InstrumentStore, StoreError
from common.config import reader_url
from common.instruments import DATED, PERPETUAL, Instrument
from tests.e2e.own_servers import free_port
from tests.e2e.tcp_proxy import TcpProxy

BTC = Instrument(exchange="bybit", symbol="BTCUSDT", base="BTC", quote="USDT", contract_type=PERPETUAL)
PEPE = Instrument(
    exchange="bybit",
    symbol="1000PEPEUSDT",
    base="PEPE",
    quote="USDT",
    contract_type=PERPETUAL,
    multiplier=Decimal(1000),
)
BTC_DEC = Instrument(
    exchange="bybit", symbol="BTC-26DEC25", base="BTC", quote="USDC", contract_type=DATED, expiry="20251226"
)
FANCY = Instrument(exchange="bybit", symbol="币安人生USDT", base="币安人生", quote="USDT", contract_type=PERPETUAL)
T0 = 1_760_000_000_000


def _rows(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT symbol, canonical, listed_at, delisted_at, updated_at FROM instruments ORDER BY symbol"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


async def test_a_stored_list_comes_back_exactly(clean_db: str) -> None:
    store = InstrumentStore(clean_db)
    assert await store.load("bybit") is None
    assert await store.save("bybit", [BTC, PEPE, BTC_DEC, FANCY], now_ms=T0) == 0
    stored = await store.load("bybit")
    assert stored is not None and stored.stored_ms == T0
    assert stored.instruments == {i.symbol: i for i in (BTC, PEPE, BTC_DEC, FANCY)}
    assert str(stored.instruments["1000PEPEUSDT"].multiplier) == "1000"
    assert await store.load("binance") is None
    canonical = {s: r[0] for s, r in _rows(clean_db).items()}
    assert canonical == {
        "BTCUSDT": "BTC-USDT-PERP",
        "1000PEPEUSDT": "PEPE-USDT-PERP",
        "BTC-26DEC25": "BTC-USDC-20251226",
        "币安人生USDT": "币安人生-USDT-PERP",
    }


async def test_delisted_rows_are_stamped_and_a_relisting_starts_over(clean_db: str) -> None:
    store = InstrumentStore(clean_db)
    await store.save("bybit", [BTC, PEPE], now_ms=T0)
    assert await store.save("bybit", [BTC], now_ms=T0 + 1000) == 1
    rows = _rows(clean_db)
    assert rows["1000PEPEUSDT"][2] is not None and rows["BTCUSDT"][2] is None
    stored = await store.load("bybit")
    assert stored is not None and list(stored.instruments) == ["BTCUSDT"]
    await store.save("bybit", [BTC, PEPE], now_ms=T0 + 2000)
    rows = _rows(clean_db)
    assert rows["1000PEPEUSDT"][2] is None
    assert rows["1000PEPEUSDT"][1].timestamp() * 1000 == T0 + 2000  # listed again: a new listed_at
    assert rows["BTCUSDT"][1].timestamp() * 1000 == T0  # listed all along: the first listed_at stays


async def test_the_reader_may_read_instruments_but_not_write(clean_db: str) -> None:
    await InstrumentStore(clean_db).save("bybit", [BTC], now_ms=T0)
    with psycopg.connect(reader_url(clean_db, "")) as conn:
        assert conn.execute("SELECT canonical FROM instruments").fetchall() == [("BTC-USDT-PERP",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM instruments")


async def test_an_unreachable_database_is_a_store_error_within_the_deadline() -> None:
    store = InstrumentStore(f"postgresql://liq@127.0.0.1:{free_port()}/liq", connect_timeout=1, deadline=3)
    started = time.monotonic()
    with pytest.raises(StoreError, match="reading the stored binance instruments"):
        await store.load("binance")
    with pytest.raises(StoreError, match="storing 1 bybit instruments"):
        await store.save("bybit", [BTC])
    assert time.monotonic() - started < 8


async def test_a_database_that_never_answers_is_a_store_error_at_the_deadline(clean_db: str) -> None:
    parts = urlsplit(clean_db)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        store = InstrumentStore(proxy.url_for(clean_db), connect_timeout=30, deadline=1.5)
        await store.save("bybit", [BTC], now_ms=T0)  # through the proxy while it passes
        proxy.set_mode("hang")
        started = time.monotonic()
        with pytest.raises(StoreError, match="no answer within 1.5 s"):
            await store.load("bybit")
        assert 1.4 < time.monotonic() - started < 5
