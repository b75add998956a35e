"""A database that hangs, refuses or rejects rows, a spool on a full disk, a killed collector.

TimescaleDB is the shared server, reached through a TCP proxy of the test's own (tests/e2e/
tcp_proxy.py) that can pass, refuse, cut or hang; the collector runs as its own process, fed by
the fake venues. Each test asserts what TimescaleDB and Redis hold, and that the process lives.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from collector.replay_server import BinanceServer, BybitServer
from collector.storage.spool import decode_batch
from common.events import Event, ms_to_datetime
from common.live_view import WINDOW_MS
from tests import services
from tests.e2e.process import collector_env, spooled_liquidations, start_collector
from tests.e2e.script import Session
from tests.e2e.small_fs import fill, small_filesystem
from tests.e2e.tcp_proxy import TcpProxy
from tests.storage.factories import liq, now_ms
from tests.storage.helpers import (
    ROLLUPS_EQUAL_RAW,
    db_count,
    db_totals,
    published_state,
    redis_totals,
    running_service,
    wait_until,
)
from tests.storage.test_isolation import long_symbol

BATCH_TIMEOUT_S = 4
DEADLINES = {
    "LIQ_DB_CONNECT_TIMEOUT_S": "2",
    "LIQ_DB_STATEMENT_TIMEOUT_S": "5",
    "LIQ_DB_BATCH_TIMEOUT_S": str(BATCH_TIMEOUT_S),
}


def _proxy_for(url: str) -> TcpProxy:
    parts = urlsplit(url)
    return TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))


def _scalar(url: str, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _frames(start_ms: int, rounds: int, tag: int, items: int = 3, session: Session | None = None) -> Session:
    """`rounds` Binance events and `rounds` Bybit frames of `items` liquidations, 10 ms apart."""
    s = session or Session()
    for i in range(rounds):
        t = start_ms + i * 10
        s.add_binance(t, ("SELL", "BUY")[i % 2], f"0.0{i % 9 + 1}", f"{60_000 + tag * 1_000 + i}.1")
        bybit = [
            (t + k, ("Buy", "Sell")[k % 2], f"0.00{k % 9 + 1}", f"{61_000 + tag * 1_000 + i}.{k + 1}")
            for k in range(items)
        ]
        s.add_bybit(t + items, bybit)
    return s


async def _push(binance: BinanceServer, bybit: BybitServer, session: Session) -> None:
    for frame in session.binance:
        await binance.push(frame)
    for frame in session.bybit:
        await bybit.push(frame)


def _merged(*sessions: Session) -> Session:
    out = Session()
    for s in sessions:
        out.expected.update(s.expected)
    return out


def _count(session: Session) -> int:
    return len(session.expected)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _tail(log: Path) -> str:
    return log.read_text()[-4000:]


async def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, _tail(log)


async def test_a_database_that_hangs_is_an_outage_not_a_stall(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "collector.log"
    spool = tmp_path / "spool" / "spool.ndjson"
    now = now_ms()
    before = _frames(now - 600_000, 20, tag=1)
    during = _frames(now - 500_000, 20, tag=2)
    later = _frames(now - 400_000, 20, tag=3)
    every = _merged(before, during, later)
    lo, hi = now - WINDOW_MS, now + 60_000
    with _proxy_for(clean_db) as proxy:
        async with BinanceServer() as binance, BybitServer() as bybit:
            env = collector_env(
                proxy.url_for(clean_db),
                redis_prefix,
                tmp_path,
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BYBIT_WS_URL=bybit.url,
                **DEADLINES,
            )
            proc = start_collector(env, log)
            try:
                await binance.wait_connected(1, within=60)
                await bybit.wait_connected(1, within=60)
                await _push(binance, bybit, before)
                await wait_until(lambda: db_count(clean_db) == _count(before), what="stored while the proxy passes")

                proxy.set_mode("hang")  # accepts, never answers; open connections go silent
                hung_at = time.monotonic()
                await _push(binance, bybit, during)
                await wait_until(
                    lambda: "TimescaleDB does not answer in time" in log.read_text(),
                    within=BATCH_TIMEOUT_S + 10,
                    what="the hang logged within the deadline",
                )
                assert time.monotonic() - hung_at < BATCH_TIMEOUT_S + 10
                await wait_until(lambda: len(spooled_liquidations(spool)) == _count(during), what="spooled")
                await wait_until(
                    lambda: published_state(sync_redis, redis_prefix).get("database") == "timeout", what="state"
                )
                # the live view keeps moving while the database hangs
                await _push(binance, bybit, later)
                await wait_until(
                    lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == every.totals(),
                    within=15,
                    what="Redis has every event while the database hangs",
                )
                await wait_until(
                    lambda: len(spooled_liquidations(spool)) == _count(during) + _count(later), what="all spooled"
                )
                state = published_state(sync_redis, redis_prefix)
                assert now_ms() - state["heartbeat_ms"] < 5_000 and state["database"] == "timeout"
                assert "no answer within" in state["database_error"] or "timeout" in state["database_error"]
                assert db_count(clean_db) == _count(before) and _alive(proc)

                proxy.set_mode("pass")
                await wait_until(lambda: spool.stat().st_size == 0, within=60, what="spool replayed")
                await wait_until(lambda: db_count(clean_db) == _count(every), what="every event stored")
                await wait_until(lambda: published_state(sync_redis, redis_prefix).get("database") == "ok", what="ok")
                assert _alive(proc)
            finally:
                await _stop(proc, log)
    assert _scalar(clean_db, "SELECT count(DISTINCT event_key) FROM liquidations") == _count(every)
    assert db_totals(clean_db, 0, now_ms() + 60_000) == every.totals()
    assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True


async def test_sigkill_while_the_database_hangs_then_restart_stores_what_was_spooled(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """30,000 events while the database hangs, with a batch deadline of 60 s: the live view does not
    wait for the deadline, everything reaches the spool, and a SIGKILL then loses none of it."""
    log = tmp_path / "collector.log"
    spool = tmp_path / "spool" / "spool.ndjson"
    session = Session()
    start = now_ms() - 1_200_000
    for f in range(100):  # 30,000 liquidations in Bybit frames of 300
        t = start + f * 3_000
        items = [(t + k, ("Buy", "Sell")[k % 2], f"0.0{k % 9 + 1}", f"{60_000 + f}.{k + 1}") for k in range(300)]
        session.add_bybit(t + 400, items)
    lo, hi = start - 1, now_ms()
    with _proxy_for(clean_db) as proxy:
        async with BinanceServer() as binance, BybitServer() as bybit:
            env = collector_env(
                proxy.url_for(clean_db),
                redis_prefix,
                tmp_path,
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BYBIT_WS_URL=bybit.url,
                **{**DEADLINES, "LIQ_DB_BATCH_TIMEOUT_S": "60"},
            )
            proc = start_collector(env, log)
            try:
                await bybit.wait_connected(1, within=60)
                proxy.set_mode("hang")
                hung_at = time.monotonic()
                await _push(binance, bybit, session)
                await wait_until(
                    lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == session.totals(),
                    within=30,
                    what="the live view has every event long before the 60 s deadline",
                )
                await wait_until(lambda: len(spooled_liquidations(spool)) == 30_000, within=30, what="all spooled")
                assert time.monotonic() - hung_at < 40
                # The batch in flight was spooled without waiting for its deadline; or, when the hang
                # caught the pool's one open connection busy (a start-up read), no new connection
                # could be had and the batches went straight to the spool: either way, not waited for.
                text = log.read_text()
                assert "spooled meanwhile" in text or "batches go to the spool until it answers" in text
                assert db_count(clean_db) == 0
                proc.kill()
                await asyncio.to_thread(proc.wait, 15)
                proxy.set_mode("pass")
                proc = start_collector(env, log)
                await wait_until(lambda: db_count(clean_db) == 30_000, within=90, what="the spool written at restart")
                await wait_until(lambda: spool.stat().st_size == 0, what="spool emptied")
            finally:
                await _stop(proc, log)
    assert db_totals(clean_db, 0, now_ms()) == session.totals()
    assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True


async def test_sigterm_while_the_database_hangs_stops_in_time_and_keeps_everything(
    clean_db: str, redis_prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "collector.log"
    spool = tmp_path / "spool" / "spool.ndjson"
    session = _frames(now_ms() - 300_000, 30, tag=4)
    with _proxy_for(clean_db) as proxy:
        async with BinanceServer() as binance, BybitServer() as bybit:
            env = collector_env(
                proxy.url_for(clean_db),
                redis_prefix,
                tmp_path,
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BYBIT_WS_URL=bybit.url,
                **{**DEADLINES, "LIQ_DB_BATCH_TIMEOUT_S": "60"},
            )
            proc = start_collector(env, log)
            try:
                await binance.wait_connected(1, within=60)
                await bybit.wait_connected(1, within=60)
                proxy.set_mode("hang")
                await _push(binance, bybit, session)
                await asyncio.sleep(1.0)  # the batch is on its way to a server that never answers
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 20) == 0, _tail(log)
                assert time.monotonic() - sent < 15  # about 10 s promised; supervisord waits 30
                assert len(spooled_liquidations(spool)) == _count(session)
                proxy.set_mode("pass")
                proc = start_collector(env, log)
                await wait_until(lambda: db_count(clean_db) == _count(session), within=60, what="stored at restart")
            finally:
                await _stop(proc, log)
    assert db_totals(clean_db, 0, now_ms()) == session.totals()


@pytest.mark.parametrize("bad_symbol", ["BTC\x00USDT", long_symbol()], ids=["nul", "2800-letters"])
async def test_one_bad_row_in_the_spool_costs_only_itself_at_replay(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path, bad_symbol: str
) -> None:
    now = now_ms()
    good: list[Event] = [
        liq(("bybit", "binance")[i % 3 == 0], now - 1_800_000 + i * 50, qty=f"0.0{i % 9 + 1}") for i in range(20_100)
    ]
    bad = liq("binance", now - 900_000, symbol=bad_symbol)
    with _proxy_for(clean_db) as proxy:
        settings = services.make_settings(proxy.url_for(clean_db), redis_prefix, tmp_path, **DEADLINES)
        async with running_service(settings) as service:
            proxy.set_mode("refuse")
            proxy.cut()
            for ev in [*good[:12_000], bad, *good[12_000:]]:
                await service.queue.put(ev)
            await wait_until(lambda: service.spool.pending_events >= 20_101, what="everything spooled")
            assert service.pipeline.state()["database"] == "unavailable"
            proxy.set_mode("pass")
            await wait_until(lambda: service.spool.empty, within=60, what="spool replayed")
            await wait_until(lambda: db_count(clean_db) == 20_100, what="every good row")
            state = service.pipeline.state()
            assert state["quarantined_rows"] == 1 and state["database"] == "ok" and state["last_quarantine_reason"]
            lo, hi = now - WINDOW_MS, now_ms()
            expected = db_totals(clean_db, lo, hi)
            await wait_until(lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == expected, what="redis == db")
    [line] = (settings.spool_dir / "quarantine.ndjson").read_text().splitlines()
    assert '"kind":"liquidations"' in line and (bad_symbol[:3] in line)
    assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True
    assert _scalar(clean_db, "SELECT count(DISTINCT event_key) FROM liquidations") == 20_100


async def test_a_full_disk_under_the_spool_is_backpressure_then_nothing_is_lost(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "collector.log"
    now = now_ms()
    session = Session()
    for f in range(40):  # 800 liquidations, ~130 KB of spool
        t = now - 1_000_000 + f * 1_000
        session.add_bybit(
            t + 300, [(t + k, ("Buy", "Sell")[k % 2], f"0.0{k % 9 + 1}", f"{60_000 + f}.{k + 1}") for k in range(20)]
        )
    with small_filesystem(tmp_path / "spool", "256k") as fs, _proxy_for(clean_db) as proxy:
        async with BinanceServer() as binance, BybitServer() as bybit:
            env = collector_env(
                proxy.url_for(clean_db),
                redis_prefix,
                tmp_path,
                LIQ_BINANCE_WS_URL=binance.url,
                LIQ_BYBIT_WS_URL=bybit.url,
                **DEADLINES,
            )
            proc = start_collector(env, log)
            try:
                await bybit.wait_connected(1, within=60)
                proxy.set_mode("refuse")
                proxy.cut()
                filler = fill(fs, leave=40 * 1024)  # the spool gets ~40 KB of a full filesystem
                await _push(binance, bybit, session)
                await wait_until(
                    lambda: published_state(sync_redis, redis_prefix).get("backpressure") is True,
                    what="backpressure published",
                )
                state = published_state(sync_redis, redis_prefix)
                assert "ENOSPC" in state["spool"]["error"] and state["database"] == "unavailable"
                await asyncio.sleep(3)  # it stays up, retrying
                assert _alive(proc)
                spool = fs / "spool.ndjson"
                data = spool.read_bytes()
                assert not data or data.endswith(b"\n")  # no torn append
                held = sum(len(decode_batch(line).liquidations) for line in data.splitlines())
                assert held < 800 and db_count(clean_db) == 0
                lo, hi = now - WINDOW_MS, now_ms()
                assert redis_totals(sync_redis, redis_prefix, lo, hi) == session.totals()  # the live view goes on

                filler.unlink()  # the disk frees up: the spool takes the waiting batches
                await wait_until(
                    lambda: published_state(sync_redis, redis_prefix).get("backpressure") is False,
                    what="backpressure over",
                )
                assert published_state(sync_redis, redis_prefix)["spool"]["error"] == ""
                await wait_until(lambda: len(spooled_liquidations(spool)) == 800, what="all in the spool")
                proxy.set_mode("pass")  # and the database comes back
                await wait_until(lambda: db_count(clean_db) == 800, within=60, what="everything stored")
                await wait_until(lambda: spool.stat().st_size == 0, what="spool emptied")
                assert _alive(proc)
            finally:
                await _stop(proc, log)
    assert "SPOOL DISK ERROR" in log.read_text()
    assert db_totals(clean_db, 0, now_ms()) == session.totals()
    assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True


@pytest.mark.parametrize("case", ["under a file", "read-only filesystem"])
async def test_a_spool_directory_that_cannot_be_used_is_a_clear_message(
    clean_db: str, redis_prefix: str, tmp_path: Path, case: str
) -> None:
    log = tmp_path / "collector.log"
    env = collector_env(clean_db, redis_prefix, tmp_path)
    if case == "under a file":
        (tmp_path / "file").write_text("not a directory")
        env["LIQ_SPOOL_DIR"] = str(tmp_path / "file" / "spool")
        code = await asyncio.to_thread(start_collector(env, log).wait, 30)
    else:
        with small_filesystem(tmp_path / "ro", "64k", read_only=True) as fs:
            env["LIQ_SPOOL_DIR"] = str(fs / "spool")
            code = await asyncio.to_thread(start_collector(env, log).wait, 30)
    text = log.read_text()
    assert code == 2, text
    assert "LIQ_SPOOL_DIR" in text and env["LIQ_SPOOL_DIR"] in text
    assert "Traceback" not in text


async def test_after_a_sigkill_no_stored_event_is_shown_as_missing_coverage(
    clean_db: str, redis_prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "collector.log"
    sent = 0
    async with BinanceServer() as binance, BybitServer() as bybit:
        env = collector_env(
            clean_db, redis_prefix, tmp_path, LIQ_BINANCE_WS_URL=binance.url, LIQ_BYBIT_WS_URL=bybit.url
        )
        proc = start_collector(env, log)
        try:
            await binance.wait_connected(1, within=60)
            await bybit.wait_connected(1, within=60)
            await asyncio.sleep(1.0)  # the streams' coverage rows open first
            for i in range(40):  # ~8 s of flow: the heartbeat (every 5 s) falls inside it
                session = _frames(now_ms(), 1, tag=i, items=2)
                await _push(binance, bybit, session)
                sent += _count(session)
                await asyncio.sleep(0.2)
            await wait_until(lambda: db_count(clean_db) == sent, what="all stored")
            # the precondition of the finding: events stored after the last heartbeat of each stream
            after_beat = """
                SELECT count(*) FROM stream_coverage s WHERE s.disconnected_at IS NULL AND EXISTS (
                    SELECT FROM liquidations l WHERE l.exchange = s.exchange AND l.time > s.last_seen_at)"""
            for i in range(50):
                if _scalar(clean_db, after_beat) == 2:
                    break
                session = _frames(now_ms(), 1, tag=100 + i, items=2)
                await _push(binance, bybit, session)
                sent += _count(session)
                await wait_until(lambda n=sent: db_count(clean_db) == n, what="stored")
            assert _scalar(clean_db, after_beat) == 2
            proc.kill()
            await asyncio.to_thread(proc.wait, 15)
            restarted = now_ms()
            proc = start_collector(env, log)
            await wait_until(
                lambda: (
                    _scalar(clean_db, "SELECT count(*) FROM stream_coverage WHERE reason = 'collector stopped'") == 2
                ),
                what="the killed run's two streams closed at the next start",
            )
        finally:
            await _stop(proc, log)
    outside = _scalar(
        clean_db,
        """SELECT count(*) FROM liquidations l WHERE l.received_at < %s AND NOT EXISTS (
               SELECT FROM stream_coverage s WHERE s.exchange = l.exchange
               AND l.time BETWEEN s.connected_at AND coalesce(s.disconnected_at, s.last_seen_at))""",
        (ms_to_datetime(restarted),),
    )
    assert outside == 0
    assert _scalar(clean_db, "SELECT count(*) FROM liquidations") == sent
