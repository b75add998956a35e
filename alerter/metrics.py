"""Prometheus metrics of the alerter, served on `LIQ_ALERTER_METRICS_PORT` at `/metrics` (0: off).

Counted where every alert passes: the `alerts` table (`CountingStore` records what it stores), so
the figures equal the table's: alerts fired per rule and kind (one per channel), deliveries
delivered and failed per status change, attempts that failed and will be retried. Deliveries in
flight and the process's own CPU and memory (`process_*`) are read at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, start_http_server

from alerter.store import AlertStore, Delivery

log = logging.getLogger("alerter.metrics")


class AlerterMetrics:
    def __init__(self, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.fired = Counter(
            "liq_alerts_fired",
            "Alerts stored to be delivered (one per channel)",
            ["rule", "kind"],
            registry=self.registry,
        )
        self.delivered = Counter("liq_alerts_delivered", "Deliveries that succeeded", registry=self.registry)
        self.failed = Counter("liq_alerts_failed", "Deliveries given up (recorded failed)", registry=self.registry)
        self.retried = Counter(
            "liq_alert_attempts_failed", "Attempts that failed and are retried", registry=self.registry
        )
        in_flight_gauge = Gauge(
            "liq_alert_deliveries_in_flight", "Deliveries running or waiting", registry=self.registry
        )
        in_flight_gauge.set_function(lambda: float(in_flight()))
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def serve(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class CountingStore(AlertStore):
    """The alert store, counting for the metrics what it stores."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics: AlerterMetrics | None = None

    async def insert(
        self, rule: str, kind: str, key: str, message: str, event: dict[str, Any], channels: tuple[str, ...]
    ) -> list[Delivery]:
        rows = await super().insert(rule, kind, key, message, event, channels)
        if self.metrics is not None and rows:
            self.metrics.fired.labels(rule, kind).inc(len(rows))
        return rows

    async def record(self, id_: int, status: str, attempts: int, last_error: str) -> None:
        await super().record(id_, status, attempts, last_error)
        if self.metrics is not None:
            {"delivered": self.metrics.delivered, "failed": self.metrics.failed}.get(status, self.metrics.retried).inc()
