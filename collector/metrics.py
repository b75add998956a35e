"""Prometheus metrics of the collector, served on `LIQ_METRICS_PORT` at `/metrics` (0: off).

Nothing here runs on the hot path. The pipeline keeps plain counters (liquidations per venue and
side, write timings) and the adapters their `StreamHealth`; this module reads both when Prometheus
scrapes, through a custom collector, so a scrape costs the collector a few dictionary reads and an
idle Prometheus costs nothing. Write latencies are histograms fed by the pipeline's writers
(`observe_db`, `observe_redis`), one observation per batch.

Names: every metric starts with `liq_`; `exchange` is the registry name (`binance`), `side` the
liquidated side (LONG/SHORT), `reason` a drop reason (`bad_json`, `unknown_instrument`, ...).
The process's own CPU and memory come with the standard `process_*` metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector import validation

log = logging.getLogger("collector.metrics")


# Batch write latency: a healthy batch takes milliseconds; a database near its deadline tens of seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Readings(Collector):
    """Gauges and counters read from the service at scrape time."""

    def __init__(
        self,
        health: Callable[[], Mapping[str, Mapping[str, Any]]],
        state: Callable[[], Mapping[str, Any]],
        liquidations: Callable[[], Mapping[tuple[str, str], int]],
    ) -> None:
        self._health = health
        self._state = state
        self._liquidations = liquidations

    def collect(self) -> Iterable[Metric]:
        events = CounterMetricFamily(
            "liq_liquidations",
            "Liquidations routed to storage, by venue and liquidated side",
            labels=["exchange", "side"],
        )
        for (exchange, side), n in sorted(self._liquidations().items()):
            events.add_metric([exchange, side], n)
        yield events

        health = self._health()
        per_venue: dict[str, tuple[str, str]] = {
            "messages": ("liq_messages", "Frames received from the venue"),
            "events": ("liq_events", "Events (liquidations and candles) the venue's frames gave"),
            "reconnects": ("liq_reconnects", "Reconnections after a lost or failed connection"),
            "refusals": ("liq_refusals", "Subscriptions the venue refused"),
        }
        for key, (name, text) in per_venue.items():
            family = CounterMetricFamily(name, text, labels=["exchange"])
            for exchange, h in sorted(health.items()):
                family.add_metric([exchange], float(h.get(key) or 0))
            yield family
        rejected = CounterMetricFamily(
            "liq_rejected", "Frames or items dropped at the edge, by reason", labels=["exchange", "reason"]
        )
        gauges = {
            "connected": GaugeMetricFamily("liq_stream_connected", "1 while a connection is open", labels=["exchange"]),
            "connections": GaugeMetricFamily("liq_connections_open", "Open connections", labels=["exchange"]),
            "topics": GaugeMetricFamily("liq_topics_subscribed", "Streams or topics subscribed", labels=["exchange"]),
            "instruments": GaugeMetricFamily("liq_instruments_tracked", "Instruments followed", labels=["exchange"]),
            "refused": GaugeMetricFamily("liq_refused_topics", "Topics refused and not re-sent", labels=["exchange"]),
            "age": GaugeMetricFamily(
                "liq_last_message_age_seconds", "Seconds since the venue's last frame", labels=["exchange"]
            ),
        }
        for exchange, h in sorted(health.items()):
            for reason, n in sorted((h.get("drops") or {}).items()):
                rejected.add_metric([exchange, reason], float(n))
            gauges["connected"].add_metric([exchange], 1.0 if h.get("connected") else 0.0)
            gauges["connections"].add_metric([exchange], float(h.get("connections") or 0))
            gauges["topics"].add_metric([exchange], float(h.get("topics") or 0))
            gauges["instruments"].add_metric([exchange], float(h.get("instruments") or 0))
            gauges["refused"].add_metric([exchange], float(len(h.get("refused_topics") or {})))
            age = h.get("last_message_age_s")
            if age is not None:
                gauges["age"].add_metric([exchange], float(age))
        yield rejected
        yield from gauges.values()

        state = self._state()
        spool = state.get("spool") or {}
        for name, text, value in (
            ("liq_queue_depth", "Events waiting in the bounded queue", state.get("queue")),
            (
                "liq_behind_seconds",
                "How long the oldest event not yet in the live view has waited since it was read",
                state.get("behind_s"),
            ),
            ("liq_inbox_events", "Events handed to Redis, waiting for TimescaleDB", state.get("inbox")),
            ("liq_spool_bytes", "Bytes in the local spool (TimescaleDB unreachable)", spool.get("bytes")),
            ("liq_spool_events", "Events in the local spool", spool.get("pending_events")),
            ("liq_backpressure", "1 while the collector holds the venues back", 1 if state.get("backpressure") else 0),
            ("liq_database_up", "1 while TimescaleDB answers", 1 if state.get("database") == "ok" else 0),
            ("liq_quarantined_rows", "Rows TimescaleDB refused, set aside", state.get("quarantined_rows")),
            (
                "liq_parse_compiled",
                "1 while the parse hot path runs its C twins",
                1 if validation.HOT_PATH_COMPILED else 0,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=float(value or 0))
        fold_behind = state.get("fold_behind_s")
        if fold_behind is not None:  # only the leading collector folds
            yield GaugeMetricFamily(
                "liq_rollup_fold_behind_seconds",
                "How long the oldest closed hour not yet folded into the hour and day rollups has been due"
                " (0 while the fold keeps up)",
                value=float(fold_behind),
            )
        for name, text, value in (
            ("liq_committed_events", "Events committed to TimescaleDB", state.get("committed_events")),
            ("liq_rejected_batches", "Batches TimescaleDB refused (bisected)", state.get("rejected_batches")),
            ("liq_invalid_events", "Events dropped before storage as invalid", state.get("invalid_events")),
        ):
            yield CounterMetricFamily(name, text, value=float(value or 0))


class Metrics:
    """The collector's registry; `serve()` starts the HTTP endpoint, `close()` stops it."""

    def __init__(
        self,
        health: Callable[[], Mapping[str, Mapping[str, Any]]],
        state: Callable[[], Mapping[str, Any]],
        liquidations: Callable[[], Mapping[tuple[str, str], int]],
    ) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(_Readings(health, state, liquidations))
        self._db = Histogram(
            "liq_db_write_seconds", "One batch written to TimescaleDB", buckets=_BUCKETS, registry=self.registry
        )
        self._redis = Histogram(
            "liq_redis_write_seconds", "One batch written to Redis", buckets=_BUCKETS, registry=self.registry
        )
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def observe_db(self, seconds: float) -> None:
        self._db.observe(seconds)

    def observe_redis(self, seconds: float) -> None:
        self._redis.observe(seconds)

    def serve(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, self._server.server_port)

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
