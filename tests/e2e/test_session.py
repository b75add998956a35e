from decimal import Decimal
from pathlib import Path

import psycopg
import redis

from collector.replay_server import BinanceServer, BybitServer
from common.live_view import WINDOW_MS, Keys, decode_cascade
from tests import services
from tests.e2e.script import build_session, cascade_expectation
from tests.storage.factories import now_ms
from tests.storage.helpers import db_count, db_totals, redis_totals, running_service, wait_until


async def test_scripted_session_on_both_exchanges_with_a_reconnect(
    clean_db: str, redis_prefix: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    now = now_ms()
    session = build_session(now - 40 * 60_000)
    half_b, half_y = len(session.binance) // 2, len(session.bybit) // 2
    async with BinanceServer() as binance, BybitServer() as bybit:
        settings = services.make_settings(
            clean_db, redis_prefix, tmp_path, LIQ_BINANCE_WS_URL=binance.url, LIQ_BYBIT_WS_URL=bybit.url
        )
        async with running_service(settings, with_adapters=True) as service:
            await binance.wait_connected(1, within=30)
            await bybit.wait_connected(1, within=30)
            for frame in session.binance[:half_b]:
                await binance.push(frame)
            for frame in session.bybit[:half_y]:
                await bybit.push(frame)
            first_half = half_b + 4 * half_y
            await wait_until(lambda: db_count(clean_db) == first_half, what="first half stored")
            await binance.drop_all(None)  # abnormal closure: the adapters reconnect
            await bybit.drop_all(None)
            await binance.wait_connected(2, within=60)
            await bybit.wait_connected(2, within=60)
            for frame in session.binance[half_b - 10 :]:  # re-delivers 10 frames already stored
                await binance.push(frame)
            for frame in session.bybit[half_y - 10 :]:
                await bybit.push(frame)
            expected = session.totals()
            unique = sum(n for n, _ in expected.values())
            await wait_until(lambda: db_count(clean_db) == unique, what="all events stored")
            lo, hi = now - WINDOW_MS, now_ms()
            await wait_until(lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == expected, what="redis totals")
            assert db_totals(clean_db, lo, hi) == expected
            assert service.health["bybit"].reconnects == 1 and service.health["binance"].reconnects == 1

        count, usd, counts = cascade_expectation(session)
        with psycopg.connect(clean_db) as conn:
            cascades = conn.execute(
                "SELECT id, events, value_usd, events_by_exchange, cross_exchange, side FROM cascades"
            ).fetchall()
            assert [(c[1], c[2], c[3], c[4], c[5]) for c in cascades] == [(count, usd, counts, True, "SHORT")]
            members = conn.execute(
                "SELECT count(*) FROM liquidations WHERE cascade_id = %s", (cascades[0][0],)
            ).fetchone()
            assert members == (count,)
            coverage = conn.execute(
                "SELECT exchange, disconnected_at IS NOT NULL, reason FROM stream_coverage ORDER BY exchange, connected_at"
            ).fetchall()
        assert [(c[0], c[1]) for c in coverage] == [("binance", True)] * 2 + [("bybit", True)] * 2
        assert coverage[1][2] == coverage[3][2] == "shutdown" and "1006" in coverage[0][2]
        [raw] = sync_redis.hvals(Keys(redis_prefix).cascades)
        live = decode_cascade(raw)
        assert (live.count, live.value_usd, live.counts, live.cross_exchange) == (count, usd, counts, True)
        assert usd == Decimal(3) * Decimal("1.5") * 61_050 + 6 * 2 * Decimal("61025.5")
