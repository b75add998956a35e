"""`python -m collector.replay` and `python -m collector.record` as real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from collector.exchanges import BinanceAdapter, BybitAdapter
from collector.replay import load_session, rebase
from collector.replay_server import BinanceServer, BybitServer
from common.events import Side
from tests.exchanges.harness import SESSION, Running, adapter_settings, frames

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update(extra)
    return env


@asynccontextmanager
async def _process(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        env=env or _env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _urls(proc: asyncio.subprocess.Process) -> dict[str, str]:
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    async with asyncio.timeout(20):
        while len(urls) < 2:
            line = (await proc.stdout.readline()).decode().strip()
            assert line, "replay exited before printing its URLs"
            name, _, value = line.partition("=")
            urls[name] = value
    return urls


async def test_replay_serves_the_sample_session_to_adapters() -> None:
    expected = [json.loads(line) for line in SESSION.read_text().splitlines()]
    assert {e["exchange"] for e in expected} == {"binance", "bybit"}
    async with _process("collector.replay", str(SESSION), "--speed", "0") as proc:
        urls = await _urls(proc)
        assert urls["LIQ_BINANCE_WS_URL"].endswith("/market")
        assert urls["LIQ_BYBIT_WS_URL"].endswith("/v5/public/linear")
        settings = adapter_settings(LIQ_SYMBOLS="BTCUSDT,ETHUSDT", **urls)
        async with (
            Running(BinanceAdapter, settings.ws_url("binance"), settings) as binance,
            Running(BybitAdapter, settings.ws_url("bybit"), settings) as bybit,
        ):
            await binance.wait_for(lambda: len(binance.liquidations()) == 3 and len(binance.candles()) == 1)
            await bybit.wait_for(lambda: len(bybit.liquidations()) == 9 and len(bybit.candles()) == 1)
        assert proc.returncode is None  # still serving, idle, until told to stop
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    # Never "live": the replay host is not a real exchange.
    for event in binance.events + bybit.events:
        assert event.source == "test"
    assert [(e.symbol, e.side, e.raw_side) for e in binance.liquidations()] == [
        ("BTCUSDT", Side.LONG, "SELL"),
        ("BTCUSDT", Side.SHORT, "BUY"),
        ("ETHUSDT", Side.LONG, "SELL"),
    ]
    assert sum(e.side is Side.LONG for e in bybit.liquidations()) == 5
    assert not binance.health.drops and not bybit.health.drops


async def test_replay_keeps_the_recorded_spacing(tmp_path: Path) -> None:
    raw = json.dumps(frames("bybit")["liquidation_one"])
    session = tmp_path / "s.ndjson"
    session.write_text("".join(json.dumps({"recv_ms": t, "exchange": "bybit", "raw": raw}) + "\n" for t in (0, 2000)))
    async with _process("collector.replay", str(session), "--speed", "2") as proc:
        urls = await _urls(proc)
        settings = adapter_settings(**urls)
        async with Running(BybitAdapter, settings.ws_url("bybit"), settings) as run:
            await run.wait_for(lambda: len(run.liquidations()) == 2)
        first, second = run.liquidations()
    gap = second.received_ms - first.received_ms
    assert 800 <= gap <= 3000  # 2 s recorded at twice real time


def test_load_session_names_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text(SESSION.read_text().splitlines()[0] + "\n{oops\n")
    with pytest.raises(ValueError, match="bad.ndjson:2"):
        load_session(bad)
    assert len(load_session(SESSION)) == 9


async def test_record_writes_data_frames_that_replay_reproduces(tmp_path: Path) -> None:
    out = tmp_path / "rec.ndjson"
    async with BinanceServer() as b, BybitServer() as y:
        env = _env(LIQ_BINANCE_WS_URL=b.url, LIQ_BYBIT_WS_URL=y.url, LIQ_SYMBOLS="BTCUSDT", LIQ_NONLIVE_SOURCE="test")
        async with _process("collector.record", "--out", str(out), "--minutes", "5", env=env) as proc:
            await b.wait_connected(1, within=20)
            await y.wait_connected(1, within=20)
            assert await b.push(frames("binance")["force_order_buy"]) == 1
            assert await y.push(frames("bybit")["liquidation_five"]) == 1
            assert await y.push_raw("not json") == 1
            await b.wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 3, within=20)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert proc.stdout is not None
            assert b"recorded 3 frames" in await proc.stdout.read()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    [binance_line] = [line for line in lines if line["exchange"] == "binance"]
    bybit_lines = [line for line in lines if line["exchange"] == "bybit"]
    assert json.loads(binance_line["raw"])["stream"] == "btcusdt@forceOrder"  # the combined frame as received
    assert json.loads(bybit_lines[0]["raw"]) == frames("bybit")["liquidation_five"]
    assert bybit_lines[1]["raw"] == "not json"  # kept: a replay should reproduce bad input too
    assert all(type(line["recv_ms"]) is int for line in lines)
    assert all('"op"' not in line["raw"] for line in lines)  # no subscribe acks

    async with _process("collector.replay", str(out), "--speed", "0") as proc:
        settings = adapter_settings(**await _urls(proc))
        async with (
            Running(BinanceAdapter, settings.ws_url("binance"), settings) as binance,
            Running(BybitAdapter, settings.ws_url("bybit"), settings) as bybit,
        ):
            await binance.wait_for(lambda: len(binance.liquidations()) == 1)
            await bybit.wait_for(lambda: len(bybit.liquidations()) == 5 and bybit.health.drops["bad_json"] == 1)
    assert binance.liquidations()[0].side is Side.SHORT
    assert [e.side for e in bybit.liquidations()] == [Side.LONG] * 3 + [Side.SHORT, Side.LONG]


def test_rebase_moves_only_exchange_times() -> None:
    raw = json.dumps(frames("binance")["kline_open"])
    moved = json.loads(rebase(raw, 120_000))
    assert (moved["data"]["E"], moved["data"]["k"]["t"], moved["data"]["k"]["T"]) == (
        1732400180012,
        1732400120000,
        1732400179999,
    )
    assert moved["data"]["k"]["f"] == 5500000001 and moved["data"]["k"]["o"] == "97300.0"
    assert rebase("not json", 60_000) == "not json"


async def test_rebased_replay_looks_live() -> None:
    async with _process("collector.replay", str(SESSION), "--speed", "0", "--rebase") as proc:
        settings = adapter_settings(LIQ_SYMBOLS="BTCUSDT,ETHUSDT", **await _urls(proc))
        async with Running(BybitAdapter, settings.ws_url("bybit"), settings) as run:
            await run.wait_for(lambda: len(run.liquidations()) == 9 and len(run.candles()) == 1)
    now = time.time_ns() // 1_000_000
    for liq in run.liquidations():
        assert now - 120_000 <= liq.time_ms <= now + 120_000
    [candle] = run.candles()
    # moved by whole minutes, so a minute-aligned open time stays aligned
    assert (candle.open_ms - 1732400000000) % 60_000 == 0 and abs(candle.open_ms - now) <= 180_000
