"""The reconnecting WebSocket connections every exchange adapter shares.

`ExchangeAdapter.run(stop)` keeps one or more connections ("shards") open, each with its own
streams (Binance stream names, Bybit topics), subscribes, reads and puts events on the bounded
queue (`await queue.put`: backpressure, never a drop) until `stop` is set. Each shard reconnects
forever on its own, from an explicit loop (never by recursion), with capped exponential backoff and
jitter that resets after a connection lived long enough: one shard's trouble never reconnects the
others. Errors never escape: a bad frame is dropped and counted (`StreamHealth.drop`), a failed or
lost connection is logged (rate-limited) and retried. Venue text (refusal messages, error texts
quoting the server) is escaped to one line before it becomes a reason, so the log, the stored
status and the live page get one line each.

The streams follow the instrument list: `add_symbols()` / `remove_symbols()` (from the instrument
catalog's refresh) subscribe and unsubscribe on the open connections, or open a new shard when the
others are full (`shard_fits()`), without touching the rest. A topic the venue refuses is a
per-topic configuration error: it is logged once, counted, kept in `refused` (shown in
`StreamHealth.snapshot()["refused_topics"]`) and not sent again until `add_symbols()` names its
symbol again; the connection and every other topic carry on.

Each connection attempt gets a `connection_id` and a `StreamStatus` life cycle: "connected" when
its subscriptions are confirmed, "heartbeat" about every 5 s while it is alive (messages, or quiet
within the silence limit),
"disconnected" with a reason when it ends ("server closed 1006", "silence 30s", "24h rotation",
"no streams", "shutdown", "error: ..."). A venue that cuts connections after a fixed lifetime
(`max_lifetime_s`) gets make-before-break rotation when `make_before_break` is set: a successor
connection is opened and confirmed before the old one closes, so coverage has no gap (the dedup key
absorbs events seen on both). A quiet connection is told from a dead one by the connection itself:
any frame (data, acks, the venue's pongs) feeds the silence watchdog, and a shard that may be idle
(`Shard.idle_ok`, e.g. Binance's `!forceOrder@arr` alone) is probed with a protocol ping before it
is called silent.

Subclasses provide the URL of a shard, its opening `subscribe()`, `request()` to (un)subscribe on
an open connection, the frame dispatcher `handle()` (which may use `self.current` for the shard the
frame came from) and the venue's app-level ping `ping_message()` (None: no pings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collector.health import StreamHealth, now_ms, one_line
from collector.validation import Rejected
from common.config import Settings
from common.events import Candle, Event, Liquidation, StreamStatus
from common.instruments import Instrument, guess_instrument

log = logging.getLogger("collector.exchanges")

ROTATION = "24h rotation"
_WORDS = re.compile(r"[\s,\[\]:;'\"()]+")  # what separates topic names in a venue's refusal text
_TICK_S = 0.5  # how often a reading session looks up from recv() (retire, rotation, silence)


class SessionEnded(Exception):
    """Raised inside a session to close the connection; `reason` goes into the "disconnected" status."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Reading:
    """What a session's reader is doing: waiting for a frame since `since` (None while it handles
    one), and the reason it was told to stop after its frame."""

    __slots__ = ("since", "stop")

    def __init__(self) -> None:
        self.since: float | None = None
        self.stop: str | None = None


class Shard:
    """One connection of an adapter: the streams it should carry and the state of its current socket."""

    def __init__(self, key: str, streams: Iterable[str] = (), *, idle_ok: bool = False, fixed: bool = False) -> None:
        self.key = key
        self.wanted: dict[str, None] = dict.fromkeys(streams)  # what this shard should carry (ordered)
        self.symbols: dict[str, None] = {}  # the symbols whose streams live here (for coverage)
        self.idle_ok = idle_ok  # may be quiet for long: probe with a protocol ping before "silence"
        self.fixed = fixed  # not closed when its symbols are gone (Binance's `!forceOrder@arr`)
        self.connection_id = ""
        self.open = False  # a socket is open now
        self.confirmed = False  # ... and its subscriptions are acknowledged
        self.active: set[str] = set()  # streams the venue acknowledged on the current socket
        # request id -> (subscribe?, streams) awaiting the venue's answer
        self.pending: dict[str, tuple[bool, list[str]]] = {}
        self.outbox: list[str] = []  # messages for the current socket, sent by its sender task
        self.wake = asyncio.Event()
        self.retired = False  # close and do not reconnect (empty, or replaced by a successor)
        self.successor: Shard | None = None
        self.in_url: list[str] = []  # Binance: the streams the connection URL itself subscribes
        self.task: asyncio.Task[None] | None = None

    def send(self, message: str) -> None:
        self.outbox.append(message)
        self.wake.set()

    def __repr__(self) -> str:
        return f"Shard({self.key!r}, {len(self.wanted)} streams, open={self.open})"


class ExchangeAdapter:
    """One exchange's streams: subclasses fill in the protocol, this class keeps them connected."""

    name: ClassVar[str] = ""
    # Tunables as class attributes so that tests (and future venues) can override them.
    heartbeat_interval_s: ClassVar[float] = 5.0
    ping_interval_s: ClassVar[float | None] = None  # app-level ping, e.g. Bybit's {"op": "ping"}
    max_lifetime_s: ClassVar[float | None] = None  # proactive rotation before the venue cuts us
    make_before_break: ClassVar[bool] = False  # rotate by opening the successor first
    messages_per_s: ClassVar[float] = 20.0  # outgoing (un)subscribe messages per connection
    backoff_initial_s: ClassVar[float] = 0.5
    backoff_max_s: ClassVar[float] = 30.0
    backoff_reset_after_s: ClassVar[float] = 60.0
    open_timeout_s: ClassVar[float] = 10.0
    close_timeout_s: ClassVar[float] = 0.5  # shutdown must not wait for a slow close handshake
    probe_timeout_s: ClassVar[float] = 10.0  # an idle shard's protocol ping must be answered within
    # websockets' own keepalive pings: off. Any frame proves the line alive, and a silent one is
    # probed (`_alive`) or cut by the silence watchdog; a pong queued behind a backlog the collector
    # is still reading (a burst it is behind on) would otherwise cut a live line and lose the
    # backlog. The library still answers the venue's pings by itself.
    ws_ping_interval_s: ClassVar[float | None] = None
    ws_ping_timeout_s: ClassVar[float | None] = None
    retry_log_interval_s: ClassVar[float] = 60.0

    def __init__(
        self,
        settings: Settings,
        queue: asyncio.Queue[Event],
        health: StreamHealth,
        *,
        url: str | None = None,
        symbols: Iterable[str] | None = None,
        candle_symbols: Iterable[str] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.health = health
        self.url = url or self.default_url(settings)
        explicit = () if settings.all_symbols else settings.symbols
        self.symbols: tuple[str, ...] = tuple(explicit if symbols is None else symbols)
        if candle_symbols is None:
            wanted = None if settings.all_candle_symbols else set(settings.candle_symbols)
            candle_symbols = [s for s in self.symbols if wanted is None or s in wanted]
        self.candle_symbols: set[str] = set(candle_symbols)
        self.whole_market = settings.all_symbols
        self.source = settings.source_for(self.url)
        # Replays are old on purpose; only live streams reject stale events.
        self.max_age_ms: int | None = settings.max_event_age_s * 1000 if self.source == "live" else None
        self.connection_id = self._new_connection_id()
        # Called with every frame before it is parsed (collector.record tees raw frames with it).
        self.raw_hook: Callable[[str | bytes, int], None] | None = None
        self.refused: dict[str, str] = health.refused_topics  # topic -> the venue's reason
        # (exchange, symbol) -> its instrument: the venue's list when the service has one
        # (`InstrumentCatalog.lookup`), else read from the symbol (the `instrument_of` property).
        self._instrument_of: Callable[[str, str], Instrument] = guess_instrument
        # The contract venues' memo of symbols already checked (`check_symbol`) whose instrument is a
        # listed USD contract: one dict read a liquidation instead of the check, the lookup and its
        # tests (~0.15 us of ~2.5). Only accepted symbols go in, so it holds at most the venue's
        # list; it starts over when `instrument_of` is set and when the catalog's list changes
        # (`InstrumentCatalog.watch`, wired by the service to its `clear`: emptied, never rebound).
        self.contracts: dict[str, Instrument] = {}
        self._logged_refusals: dict[str, str] = {}
        self.shards: list[Shard] = []
        self.current: Shard | None = None  # the shard whose frame `handle()` is reading
        self._home: dict[str, Shard] = {}  # symbol -> the shard carrying its per-symbol streams
        self._running = False
        self._serial = 0
        self._last_retry_log = -1e9
        self._failed_attempts = 0
        self._log = logging.getLogger(f"collector.exchanges.{self.name}")
        self._layout()

    # -- what a venue provides -----------------------------------------------------------------

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        """LIQ_<NAME>_WS_URL, else the venue's real endpoint (common.venues)."""
        return settings.ws_url(cls.name)

    def fixed_streams(self) -> list[Shard]:
        """Shards that do not belong to any one symbol (Binance's `!forceOrder@arr`)."""
        return []

    def streams_of(self, symbol: str, candles: bool) -> list[str]:
        """The per-symbol streams of `symbol` (its candle stream too when `candles`)."""
        raise NotImplementedError

    def may_idle(self, shard: Shard) -> bool:
        """True when the shard's streams may stay quiet for long (no candles among them)."""
        return shard.idle_ok

    def shard_fits(self, shard: Shard, streams: list[str]) -> bool:
        """True when `shard` may take `streams` on top of what it carries (venue limits)."""
        raise NotImplementedError

    def connect_url(self, shard: Shard) -> str:
        """The URL of one connection (Binance puts some of its streams in it)."""
        return self.url

    def subscribe(self, shard: Shard) -> bool:
        """Queue the opening subscriptions of a fresh socket; True when it is confirmed already."""
        raise NotImplementedError

    def request(self, shard: Shard, subscribe: bool, streams: list[str]) -> None:
        """Queue one (un)subscribe request for `streams` on the shard's open socket."""
        raise NotImplementedError

    def handle(self, raw: str | bytes, received_ms: int) -> list[Liquidation | Candle]:
        """Parse and normalise one frame; drop what is bad via health.drop. Must not raise, except
        `SessionEnded` to close the connection."""
        raise NotImplementedError

    def ping_message(self) -> str | None:
        return None

    # -- the streams follow the instrument list --------------------------------------------------

    def _layout(self) -> None:
        self.shards = self.fixed_streams()
        for shard in self.shards:
            shard.symbols = dict.fromkeys(self.symbols)
        for symbol in self.symbols:
            self._place(symbol)
        self._update_health()

    def _place(self, symbol: str) -> Shard | None:
        streams = [s for s in self.streams_of(symbol, symbol in self.candle_symbols) if s not in self.refused]
        if not streams:
            return None
        shard = next((s for s in self.shards if not s.fixed and not s.retired and self.shard_fits(s, streams)), None)
        if shard is None:
            self._serial += 1
            shard = Shard(f"{self.name}-{self._serial}")
            self.shards.append(shard)
        shard.wanted.update(dict.fromkeys(streams))
        shard.symbols[symbol] = None
        self._home[symbol] = shard
        return shard

    def add_symbols(self, symbols: Iterable[str], candle_symbols: Iterable[str] | None = None) -> None:
        """Follow `symbols` too (a listing): subscribe them on open connections with room, or a new one.
        A symbol named again is forgiven its refused topics: they are sent once more."""
        new = [s for s in symbols if s not in self._home]
        if candle_symbols is not None:
            self.candle_symbols |= set(candle_symbols)
        else:
            self.candle_symbols |= set(new)
        for symbol in new:
            for topic in self.streams_of(symbol, True):
                self.refused.pop(topic, None)
        self.symbols = (*self.symbols, *(s for s in new if s not in self.symbols))
        for shard in self.shards:
            if shard.fixed:
                shard.symbols.update(dict.fromkeys(new))
        for symbol in new:
            home = self._place(symbol)
            if home is None:
                continue
            if home.task is None and self._running:
                self._start(home)
            elif home.open:  # a socket still connecting subscribes everything `wanted` when it opens
                self.request(home, True, [s for s in self.streams_of(symbol, True) if s in home.wanted])
        self._update_health()

    def remove_symbols(self, symbols: Iterable[str]) -> None:
        """Stop following `symbols` (a delisting): unsubscribe them; a shard left empty closes."""
        gone = set(symbols)
        self.symbols = tuple(s for s in self.symbols if s not in gone)
        self.candle_symbols -= gone
        for symbol in gone:
            shard = self._home.pop(symbol, None)
            for fixed in self.shards:
                if fixed.fixed:
                    fixed.symbols.pop(symbol, None)
            if shard is None:
                continue
            streams = [s for s in self.streams_of(symbol, True) if s in shard.wanted]
            for stream in streams:
                shard.wanted.pop(stream, None)
            shard.symbols.pop(symbol, None)
            live = [s for s in streams if s in shard.active]
            if not shard.wanted and not shard.fixed:
                shard.retired = True
                shard.wake.set()
            elif shard.open and live:
                self.request(shard, False, live)
        self.shards = [s for s in self.shards if not (s.retired and s.task is None)]
        self._update_health()

    def retry_refused(self, listed: Iterable[str]) -> list[str]:
        """An instrument refresh lists these symbols: their refused topics are forgiven and sent once
        more (a topic not live yet at a listing gets another chance; a wrong one is refused again,
        logged again). Returns the topics sent again."""
        if not self.refused:
            return []
        retried: list[str] = []
        for symbol in listed:
            topics = [t for t in self.streams_of(symbol, symbol in self.candle_symbols) if t in self.refused]
            if not topics:
                continue
            for topic in topics:
                del self.refused[topic]
            retried += topics
            home = self._home.get(symbol)
            if home is None:
                if symbol in self.symbols:
                    home = self._place(symbol)
                    if home is not None and home.task is None and self._running:
                        self._start(home)
                continue
            home.wanted.update(dict.fromkeys(topics))
            if home.open:
                self.request(home, True, topics)
        self._update_health()
        return retried

    def refuse(self, topic: str, reason: str) -> None:
        """The venue refused `topic`: remember it (not sent again until its symbol is listed again)."""
        if topic in self.refused:
            return
        self.refused[topic] = reason
        self.health.refusals += 1
        # Logged once per topic and reason: a refresh that tries it again and is refused again is quiet.
        level = logging.DEBUG if self._logged_refusals.get(topic) == reason else logging.WARNING
        self._logged_refusals[topic] = reason
        self._log.log(level, "%s: topic %s refused: %s", self.name, one_line(topic, 100), one_line(reason, 200))
        for shard in self.shards:
            shard.wanted.pop(topic, None)

    def _answered(self, shard: Shard, req_id: str, ok: bool, reason: str = "") -> None:
        """The venue answered request `req_id`. A refused subscription is narrowed down to the topics
        it names (the others are sent again without them); when it names none, it is split in
        halves until each refused topic stands alone (at most 2n-1 requests for n topics)."""
        entry = shard.pending.pop(req_id, None)
        if entry is None:
            return
        subscribe, streams = entry
        if ok:
            if subscribe:
                shard.active.update(streams)
            else:
                shard.active.difference_update(streams)
            self._update_health()
            return
        if not subscribe:
            shard.active.difference_update(streams)
            self._log.info("%s: unsubscribe refused: %s", self.name, one_line(reason, 200))
            return
        words = set(_WORDS.split(reason))
        named = [s for s in streams if s in words]
        for stream in named:
            self.refuse(stream, reason)
        rest = [s for s in streams if s not in named and s in shard.wanted]
        if named:
            if rest:
                self.request(shard, True, rest)
        elif len(rest) == 1:
            self.refuse(rest[0], reason)
        elif rest:
            half = len(rest) // 2
            self.request(shard, True, rest[:half])
            self.request(shard, True, rest[half:])

    def _update_health(self) -> None:
        live = [s for s in self.shards if not s.retired or s.open]
        self.health.connections = sum(1 for s in live if s.open)
        self.health.topics = sum(len(s.active) for s in self.shards if s.open)
        self.health.instruments = len(self.symbols)
        confirmed = [s for s in self.shards if s.confirmed]
        self.health.connected = bool(confirmed)
        if not confirmed:
            self.health.connected_since_ms = None
        elif self.health.connected_since_ms is None:
            self.health.connected_since_ms = now_ms()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, then put a final "disconnected"/"shutdown" status per connection."""
        self._running = True
        for shard in self.shards:
            self._start(shard)
        try:
            await stop.wait()
        finally:
            self._running = False
            tasks = [s.task for s in self.shards if s.task is not None]
            for shard in self.shards:
                if shard.successor is not None and shard.successor.task is not None:
                    tasks.append(shard.successor.task)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for shard in list(self.shards):
            shard.open = shard.confirmed = False
            await self._status(shard, "disconnected", "shutdown")
        self._update_health()

    @property
    def instrument_of(self) -> Callable[[str, str], Instrument]:
        return self._instrument_of

    @instrument_of.setter
    def instrument_of(self, lookup: Callable[[str, str], Instrument]) -> None:
        self._instrument_of = lookup
        self.contracts.clear()

    def _start(self, shard: Shard) -> None:
        shard.task = asyncio.create_task(self._connect_forever(shard), name=f"{self.name}-{shard.key}")

    async def _connect_forever(self, shard: Shard) -> None:
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        first = True
        while not shard.retired:
            shard.connection_id = self.connection_id = self._new_connection_id()
            opened_at: float | None = None
            reason = ""
            try:
                async with connect(
                    self.connect_url(shard),
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
                    reason = await self._session(shard, ws)
            except SessionEnded as exc:
                reason = exc.reason
            except ConnectionClosed as exc:
                reason = _closed_reason(exc)
            except (OSError, TimeoutError) as exc:
                reason = _error_reason(exc)
            except Exception as exc:  # invalid handshake, bad URL, ...: never crash, retry
                reason = _error_reason(exc)
            finally:
                shard.open = shard.confirmed = False
                shard.active.clear()
                self._update_health()
            if opened_at is not None:
                await self._status(shard, "disconnected", reason)
                if time.monotonic() - opened_at > self.backoff_reset_after_s:
                    backoff.reset()
            if shard.retired:
                break
            if not reason.startswith("server closed 1000") and reason != ROTATION:
                self.health.error(reason)
            # A planned rotation reconnects at once; anything else waits its turn.
            wait = 0.0 if reason == ROTATION else backoff.next()
            self._log_retry(reason, wait, connected=opened_at is not None)
            await asyncio.sleep(wait)
        shard.task = None
        if shard not in self.shards:
            return
        self.shards = [s for s in self.shards if s is not shard]
        self._update_health()

    async def _session(self, shard: Shard, ws: ClientConnection) -> str:
        """Subscribe and read until the connection ends; return the reason it ended.

        A reader task takes the frames (`_read`); this loop looks up every `_TICK_S` for what ends
        the session (retired, rotation, silence) and for the heartbeat. A timeout around each
        recv() cost a busy feed a timer per frame: a fifth of the read path's CPU (bench.bench_read)."""
        opened = time.monotonic()
        shard.open, shard.confirmed = True, False
        shard.active, shard.pending, shard.outbox = set(), {}, []
        self._update_health()
        if self.subscribe(shard):
            await self._confirm(shard)
        sender = asyncio.create_task(self._send_forever(shard, ws))
        pinger = asyncio.create_task(self._ping_forever(ws)) if self.ping_interval_s else None
        reading = _Reading()
        reader = asyncio.create_task(self._read(shard, ws, reading))
        silence = self.settings.silence_timeout_s
        last_beat = time.monotonic()
        try:
            while True:
                await asyncio.wait((reader,), timeout=_TICK_S)
                if reader.done():
                    return reader.result()  # raises what ended it: closed, SessionEnded
                reason = self._ending(shard, opened)
                since = reading.since
                if reason is None and since is not None and time.monotonic() - since >= silence:
                    if self.may_idle(shard) and await self._alive(ws):
                        if reading.since is not None:  # still waiting: the probe's answer counts as a frame
                            reading.since = time.monotonic()
                        continue
                    reason = f"silence {silence:g}s"
                if reason is not None:
                    # The reader stops between frames: one waiting for a frame is cancelled below
                    # (websockets keeps a frame that a cancelled recv() did not return); one still
                    # queueing a frame's events (backpressure may hold it there) finishes them first,
                    # so no event of a frame already read is lost.
                    reading.stop = reason
                    if reading.since is None:
                        await reader
                    return reason
                # Quiet is not silent: the line answered recently, so it still covers its streams
                # (stored coverage is refreshed by these beats, traffic or not).
                if shard.confirmed and time.monotonic() - last_beat >= self.heartbeat_interval_s:
                    last_beat = time.monotonic()
                    self.health.topics = sum(len(s.active) for s in self.shards if s.open)
                    await self._status(shard, "heartbeat")
        finally:
            for task in (reader, sender, pinger):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if shard.successor is not None:
                self._hand_over(shard)

    def _ending(self, shard: Shard, opened: float) -> str | None:
        """Why this session should end now, if it should (silence aside); starts a rotation's
        successor when the connection is old enough."""
        if shard.retired and shard.successor is None:
            return "no streams"
        if shard.successor is not None and shard.successor.confirmed:
            return ROTATION
        lifetime = self.max_lifetime_s
        if lifetime is not None and time.monotonic() - opened >= lifetime and shard.successor is None:
            if not self.make_before_break:
                return ROTATION
            self._spawn_successor(shard)
        return None

    async def _read(self, shard: Shard, ws: ClientConnection, reading: _Reading) -> str:
        """Take frames until told to stop; a frame's events are all queued before stopping."""
        while reading.stop is None:
            reading.since = time.monotonic()
            raw = await ws.recv()
            reading.since = None
            received = now_ms()
            self.health.messages += 1
            self.health.last_message_ms = received
            if self.raw_hook is not None:
                self.raw_hook(raw, received)
            self.current = shard
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
            if not shard.confirmed and not shard.pending:
                await self._confirm(shard)
        return reading.stop

    def _spawn_successor(self, shard: Shard) -> None:
        """Make before break: a new connection with the same streams, opened while this one reads."""
        successor = Shard(shard.key, shard.wanted, idle_ok=shard.idle_ok, fixed=shard.fixed)
        successor.symbols = dict(shard.symbols)
        shard.successor = successor
        index = self.shards.index(shard) if shard in self.shards else len(self.shards)
        self.shards.insert(index + 1, successor)
        for symbol in successor.symbols:
            if self._home.get(symbol) is shard:
                self._home[symbol] = successor
        self._start(successor)

    def _hand_over(self, shard: Shard) -> None:
        """The old connection of a rotation is closing (its successor is confirmed, or this socket
        died first): it does not reconnect, the successor carries its streams on."""
        shard.retired = True

    async def _alive(self, ws: ClientConnection) -> bool:
        """A quiet connection is alive when it answers a protocol ping in time."""
        try:
            pong = await ws.ping()
            async with asyncio.timeout(self.probe_timeout_s):
                await pong
        except (TimeoutError, ConnectionClosed):
            return False
        self.health.last_message_ms = now_ms()
        return True

    async def _send_forever(self, shard: Shard, ws: ClientConnection) -> None:
        """Send the shard's queued requests, at most `messages_per_s` a second (venue limits)."""
        gap = 1.0 / self.messages_per_s
        with contextlib.suppress(ConnectionClosed):
            while True:
                await shard.wake.wait()
                shard.wake.clear()
                while shard.outbox:
                    await ws.send(shard.outbox.pop(0))
                    await asyncio.sleep(gap)

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

    async def _confirm(self, shard: Shard) -> None:
        """The subscriptions are in place: the connection now counts as covering its streams."""
        if shard.confirmed:
            return
        shard.confirmed = True
        self._update_health()
        await self._status(shard, "connected")

    async def _status(self, shard: Shard, state: str, reason: str = "") -> None:
        await self.queue.put(
            StreamStatus(
                exchange=self.name,
                connection_id=shard.connection_id,
                state=state,
                at_ms=now_ms(),
                symbols=tuple(shard.symbols),
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
