"""The reconnecting WebSocket loop every exchange adapter shares.

`ExchangeAdapter.run(stop)` connects, subscribes, reads and puts events on the bounded queue
(`await queue.put`: backpressure, never a drop) until `stop` is set. It reconnects forever, from
an explicit loop (never by recursion), with capped exponential backoff and jitter that resets
after a connection lived long enough. Errors never escape: a bad frame is dropped and counted
(`StreamHealth.drop`), a failed or lost connection is logged (rate-limited) and retried. Venue
text (refusal messages, error texts quoting the server) is escaped to one line before it becomes
a reason, so the log, the stored status and the live page get one line each.

Each connection attempt gets a `connection_id` and a `StreamStatus` life cycle: "connected" when
the subscription is confirmed, "heartbeat" about every 5 s while messages arrive, "disconnected"
with a reason when it ends ("server closed 1006", "silence 30s", "subscribe refused: ...",
"24h rotation", "shutdown", "error: ..."). Subclasses provide the URL, `subscribe()` and the
frame dispatcher `handle()`; the venue's app-level ping is `ping_message()` (None: no pings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
import uuid
from collections.abc import Callable
from typing import ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collector.health import StreamHealth, now_ms, one_line
from collector.validation import Rejected
from common.config import Settings
from common.events import Candle, Event, Liquidation, StreamStatus

log = logging.getLogger("collector.exchanges")


class SessionEnded(Exception):
    """Raised inside a session to close the connection; `reason` goes into the "disconnected" status."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExchangeAdapter:
    """One exchange's stream: subclasses fill in the protocol, this class keeps it connected."""

    name: ClassVar[str] = ""
    # Tunables as class attributes so that tests (and future venues) can override them.
    heartbeat_interval_s: ClassVar[float] = 5.0
    ping_interval_s: ClassVar[float | None] = None  # app-level ping, e.g. Bybit's {"op": "ping"}
    max_lifetime_s: ClassVar[float | None] = None  # proactive rotation before the venue cuts us
    backoff_initial_s: ClassVar[float] = 0.5
    backoff_max_s: ClassVar[float] = 30.0
    backoff_reset_after_s: ClassVar[float] = 60.0
    open_timeout_s: ClassVar[float] = 10.0
    close_timeout_s: ClassVar[float] = 0.5  # shutdown must not wait for a slow close handshake
    # websockets' own keepalive (RFC 6455 pings); it also answers the venue's pings by itself.
    ws_ping_interval_s: ClassVar[float | None] = 20.0
    ws_ping_timeout_s: ClassVar[float | None] = 20.0
    retry_log_interval_s: ClassVar[float] = 60.0

    def __init__(
        self,
        settings: Settings,
        queue: asyncio.Queue[Event],
        health: StreamHealth,
        *,
        url: str | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.health = health
        self.url = url or self.default_url(settings)
        self.symbols: tuple[str, ...] = settings.symbols
        self.source = settings.source_for(self.url)
        # Replays are old on purpose; only live streams reject stale events.
        self.max_age_ms: int | None = settings.max_event_age_s * 1000 if self.source == "live" else None
        self.connection_id = self._new_connection_id()
        # Called with every frame before it is parsed (collector.record tees raw frames with it).
        self.raw_hook: Callable[[str | bytes, int], None] | None = None
        self.subscribed = False  # set by the venue's code once the subscription is acknowledged
        self._confirmed = False
        self._last_retry_log = -1e9
        self._failed_attempts = 0
        self._log = logging.getLogger(f"collector.exchanges.{self.name}")

    # -- what a venue provides -----------------------------------------------------------------

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        raise NotImplementedError

    def connect_url(self) -> str:
        """The URL of one connection (Binance puts its streams in it)."""
        return self.url

    async def subscribe(self, ws: ClientConnection) -> bool:
        """Send the subscriptions; return True when they are confirmed by the connection alone."""
        raise NotImplementedError

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """Parse and normalise one frame; drop what is bad via health.drop. Must not raise, except
        `SessionEnded` to close the connection (e.g. a refused subscription)."""
        raise NotImplementedError

    def ping_message(self) -> str | None:
        return None

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, then put a final "disconnected"/"shutdown" status and return."""
        worker = asyncio.create_task(self._connect_forever(), name=f"{self.name}-stream")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (worker, stopper):
                task.cancel()
            for task in (worker, stopper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._mark_disconnected()
        await self._status("disconnected", "shutdown")

    async def _connect_forever(self) -> None:
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        first = True
        while True:
            self.connection_id = self._new_connection_id()
            self.subscribed = self._confirmed = False
            opened_at: float | None = None
            reason = ""
            try:
                async with connect(
                    self.connect_url(),
                    open_timeout=self.open_timeout_s,
                    close_timeout=self.close_timeout_s,
                    ping_interval=self.ws_ping_interval_s,
                    ping_timeout=self.ws_ping_timeout_s,
                    max_size=1 << 22,
                    compression=None,
                ) as ws:
                    opened_at = time.monotonic()
                    if not first:
                        self.health.reconnects += 1
                    first = False
                    reason = await self._session(ws)
            except SessionEnded as exc:
                reason = exc.reason
            except ConnectionClosed as exc:
                reason = _closed_reason(exc)
            except (OSError, TimeoutError) as exc:
                reason = _error_reason(exc)
            except Exception as exc:  # invalid handshake, bad URL, ...: never crash, retry
                reason = _error_reason(exc)
            if opened_at is not None:
                self._mark_disconnected()
                await self._status("disconnected", reason)
                if time.monotonic() - opened_at > self.backoff_reset_after_s:
                    backoff.reset()
            if not reason.startswith("server closed 1000") and reason != "24h rotation":
                self.health.error(reason)
            # A planned rotation reconnects at once; anything else waits its turn.
            wait = 0.0 if reason == "24h rotation" else backoff.next()
            self._log_retry(reason, wait, connected=opened_at is not None)
            await asyncio.sleep(wait)

    async def _session(self, ws: ClientConnection) -> str:
        """Subscribe and read until the connection ends; return the reason it ended."""
        opened = time.monotonic()
        self.subscribed = await self.subscribe(ws)
        if self.subscribed:
            await self._confirm()
        pinger = asyncio.create_task(self._ping_forever(ws)) if self.ping_interval_s else None
        silence = self.settings.silence_timeout_s
        last_beat = time.monotonic()
        try:
            while True:
                wait = silence
                if self.max_lifetime_s is not None:
                    left = self.max_lifetime_s - (time.monotonic() - opened)
                    if left <= 0:
                        return "24h rotation"
                    wait = min(wait, left)
                try:
                    async with asyncio.timeout(wait):
                        raw = await ws.recv()
                except TimeoutError:
                    if wait < silence:
                        return "24h rotation"
                    return f"silence {silence:g}s"
                received = now_ms()
                self.health.messages += 1
                self.health.last_message_ms = received
                if self.raw_hook is not None:
                    self.raw_hook(raw, received)
                try:
                    events = self.handle(raw, received)
                except SessionEnded:
                    raise
                except Exception:  # a parser bug must cost one frame, not the connection
                    self._parser_bug(raw)
                    events = []
                for event in events:
                    self.health.events += 1
                    await self.queue.put(event)
                if self.subscribed and not self._confirmed:
                    await self._confirm()
                if self._confirmed and time.monotonic() - last_beat >= self.heartbeat_interval_s:
                    last_beat = time.monotonic()
                    await self._status("heartbeat")
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger

    def _new_connection_id(self) -> str:
        return f"{self.name}-{uuid.uuid4().hex[:12]}"

    async def _ping_forever(self, ws: ClientConnection) -> None:
        assert self.ping_interval_s is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.ping_interval_s)
                message = self.ping_message()
                if message is not None:
                    await ws.send(message)

    async def _confirm(self) -> None:
        """The subscription is in place: the connection now counts as covering its streams."""
        if self._confirmed:
            return
        self._confirmed = True
        self.health.connected = True
        self.health.connected_since_ms = now_ms()
        await self._status("connected")

    def _mark_disconnected(self) -> None:
        self.health.connected = False
        self.health.connected_since_ms = None

    async def _status(self, state: str, reason: str = "") -> None:
        await self.queue.put(
            StreamStatus(
                exchange=self.name,
                connection_id=self.connection_id,
                state=state,
                at_ms=now_ms(),
                symbols=self.symbols,
                source=self.source,
                reason=reason,
            )
        )

    def _drop(self, exc: Rejected, raw: str | bytes) -> None:
        self.health.drop(exc.reason, raw, self._log)

    def _parser_bug(self, raw: str | bytes) -> None:
        """Inside `except`: a handler bug costs its frame or item, counted as `parse_error`; the
        traceback goes into the (rate-limited, one-line) drop record, since it may quote venue text."""
        self.health.drop("parse_error", raw, self._log, detail=traceback.format_exc())

    def _log_retry(self, reason: str, wait: float, *, connected: bool) -> None:
        """One warning per interval (the rest at DEBUG): an unreachable venue must not flood the log."""
        self._failed_attempts = 0 if connected else self._failed_attempts + 1
        now = time.monotonic()
        quiet = now - self._last_retry_log < self.retry_log_interval_s
        level = logging.DEBUG if quiet else logging.WARNING
        if not quiet:
            self._last_retry_log = now
        what = "connection ended:" if connected else f"cannot connect (attempt {self._failed_attempts}):"
        self._log.log(level, "%s %s: %s %s; retrying in %.1fs", self.name, self.url, what, reason, wait)


def _error_reason(exc: BaseException) -> str:
    """The reason of a failed connection, one line: the message may quote the server (a header, a
    status text) and ends up in the log, the "disconnected" status and the live page."""
    return one_line(f"error: {type(exc).__name__}: {exc}", 300)


def _closed_reason(exc: ConnectionClosed) -> str:
    if exc.rcvd is None and exc.sent is not None:
        # We closed first: websockets' keepalive gave up on an unanswered ping.
        return f"client closed {exc.sent.code} {exc.sent.reason}".rstrip()
    return f"server closed {exc.rcvd.code if exc.rcvd is not None else 1006}"


class Backoff:
    """Capped exponential delays with jitter: initial, doubling up to `cap`; `reset()` starts over."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self._delay = initial
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next wait: between half and all of the current delay, so collectors do not retry in step."""
        wait = self._delay * (0.5 + self._rng.random() / 2)
        self._delay = min(self._delay * 2, self.cap)
        return wait

    def reset(self) -> None:
        self._delay = self.initial
