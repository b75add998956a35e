"""Helpers for the adapter tests: captured frames, settings without services, a running adapter."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.exchanges.connection import ExchangeAdapter
from collector.health import StreamHealth
from common.config import Settings, load_settings
from common.events import Candle, Event, Liquidation, StreamStatus

FRAMES = Path(__file__).resolve().parent.parent / "fixtures" / "frames"
SESSION = FRAMES / "session.ndjson"
RECEIVED_MS = 1732400002500  # a receive time shortly after the captured frames


def frames(exchange: str) -> dict[str, dict[str, Any]]:
    """Captured frames by name (tests/fixtures/frames/<exchange>.json)."""
    result: dict[str, dict[str, Any]] = json.loads((FRAMES / f"{exchange}.json").read_text())
    return result


def frame_text(exchange: str, name: str) -> str:
    return json.dumps(frames(exchange)[name], separators=(",", ":"))


def adapter_settings(**env: str) -> Settings:
    """Settings for adapter tests: no database or Redis needed, non-live label "test"."""
    base = {
        "LIQ_NONLIVE_SOURCE": "test",
        "LIQ_SILENCE_TIMEOUT_S": "2",
        "LIQ_SYMBOLS": "BTCUSDT",
        "LIQ_EXCHANGES": "binance,bybit",
    }
    base.update(env)
    return load_settings(env=base, dotenv=None)


class Running:
    """An adapter running against a URL, with every event it queued collected in `events`."""

    def __init__(
        self,
        adapter_cls: type[ExchangeAdapter],
        url: str,
        settings: Settings,
        queue_size: int = 1000,
        *,
        symbols: list[str] | None = None,
    ) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self.health = StreamHealth(adapter_cls.name, settings.source_for(url))
        self.adapter = adapter_cls(settings, self.queue, self.health, url=url, symbols=symbols)
        self.stop_event = asyncio.Event()
        self.events: list[Event] = []
        self.consume = True
        self._task: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self._task = asyncio.create_task(self.adapter.run(self.stop_event))
        self._drain = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _collect(self) -> None:
        while True:
            if not self.consume:
                await asyncio.sleep(0.01)
                continue
            self.events.append(await self.queue.get())

    async def stop(self) -> float:
        """Set stop, wait for run() to return; return how long that took (seconds)."""
        started = time.monotonic()
        self.stop_event.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        elapsed = time.monotonic() - started
        self.consume = True
        while not self.queue.empty():
            self.events.append(self.queue.get_nowait())
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
        return elapsed

    async def wait_for(self, condition: Callable[[], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.01)

    def statuses(self, state: str | None = None) -> list[StreamStatus]:
        return [e for e in self.events if isinstance(e, StreamStatus) and (state is None or e.state == state)]

    def liquidations(self) -> list[Liquidation]:
        return [e for e in self.events if isinstance(e, Liquidation)]

    def candles(self) -> list[Candle]:
        return [e for e in self.events if isinstance(e, Candle)]
