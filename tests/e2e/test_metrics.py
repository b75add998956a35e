"""Issue 13: the collector's Prometheus endpoint. A scripted session on two fake venues, then
`/metrics` must parse as Prometheus text and its counters must equal the session's figures."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from collector.replay_server import BybitServer
from tests import services
from tests.dashboard import dashboard_metrics
from tests.fakes.ws import WholeMarketBinance
from tests.storage.factories import now_ms
from tests.storage.helpers import db_count, running_service, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):  # raises on anything that is not Prometheus text
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _binance(t: int, long: bool) -> dict[str, Any]:
    order = {"s": "BTCUSDT", "S": "SELL" if long else "BUY", "o": "LIMIT", "f": "IOC", "q": "1", "p": "100"}
    return {"e": "forceOrder", "E": t, "o": {**order, "ap": "100", "X": "FILLED", "l": "1", "z": "1", "T": t}}


def _bybit(t: int, long: bool) -> dict[str, Any]:
    item = {"T": t, "s": "BTCUSDT", "S": "Buy" if long else "Sell", "v": "2", "p": "100"}
    return {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": t, "data": [item]}


async def test_metrics_equal_a_scripted_session(clean_db: str, redis_prefix: str, tmp_path: Path) -> None:
    port = _free_port()
    async with WholeMarketBinance() as binance, BybitServer() as bybit:
        settings = services.make_settings(
            clean_db,
            redis_prefix,
            tmp_path,
            LIQ_BINANCE_WS_URL=binance.url,
            LIQ_BYBIT_WS_URL=bybit.url,
            LIQ_BINANCE_REST_URL="http://127.0.0.1:9",  # no instrument lists: the explicit symbol as it is
            LIQ_BYBIT_REST_URL="http://127.0.0.1:9",
            LIQ_METRICS_PORT=str(port),
        )
        async with running_service(settings, with_adapters=True) as service:
            await binance.wait_connected(1, within=20)
            await bybit.wait_connected(1, within=20)
            t0 = now_ms() - 60_000
            for i in range(7):  # binance: 4 LONG, 3 SHORT
                assert await binance.push(_binance(t0 + i, i % 2 == 0)) == 1
            for i in range(5):  # bybit: 3 LONG, 2 SHORT
                assert await bybit.push(_bybit(t0 + 100 + i, i % 2 == 0)) == 1
            await binance.push_raw("{not json")
            await binance.push_raw("{not json either")
            await bybit.push_raw("[]")
            await wait_until(lambda: db_count(clean_db) == 12, what="the session stored")
            await wait_until(lambda: service.pipeline.state()["committed_events"] >= 12, what="committed")
            await asyncio.sleep(0.5)
            m = _scrape(port)

    def value(name: str, **labels: str) -> float:
        return m[name, tuple(sorted(labels.items()))]

    assert value("liq_liquidations_total", exchange="binance", side="LONG") == 4
    assert value("liq_liquidations_total", exchange="binance", side="SHORT") == 3
    assert value("liq_liquidations_total", exchange="bybit", side="LONG") == 3
    assert value("liq_liquidations_total", exchange="bybit", side="SHORT") == 2
    assert value("liq_rejected_total", exchange="binance", reason="bad_json") == 2
    assert (
        sum(v for (name, labels), v in m.items() if name == "liq_rejected_total" and ("exchange", "bybit") in labels)
        == 1
    )
    assert value("liq_stream_connected", exchange="binance") == 1
    assert value("liq_stream_connected", exchange="bybit") == 1
    assert value("liq_reconnects_total", exchange="bybit") == 0
    assert value("liq_database_up") == 1 and value("liq_spool_bytes") == 0
    assert value("liq_behind_seconds") == 0 and value("liq_queue_depth") == 0  # the session was worked off
    assert value("liq_rollup_fold_behind_seconds") == 0  # the leader's fold keeps up
    assert value("liq_committed_events_total") >= 12  # liquidations and connection statuses
    assert value("liq_db_write_seconds_count") >= 1 and value("liq_redis_write_seconds_count") >= 1
    assert value("liq_last_message_age_seconds", exchange="binance") < 30
    assert value("process_resident_memory_bytes") > 0
    # every collector series the Grafana dashboard draws exists under that name
    served = {name for name, _ in m}
    assert {n for n in dashboard_metrics() if not n.startswith("liq_alert")} - served == set()
