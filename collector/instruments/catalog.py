"""The current instrument list of every configured venue, refreshed from REST, kept in TimescaleDB.

    catalog = InstrumentCatalog(settings, store=InstrumentStore.from_settings(settings))
    first = await catalog.start()          # one REST attempt per venue; else the stored list
    symbols = catalog.symbols("bybit")     # what to subscribe (LIQ_SYMBOLS applied)
    task = asyncio.create_task(catalog.run(stop, on_change))   # on_change(diff) after each change

Start-up, per venue: the venue's REST list; when it cannot be had, the last list stored in
TimescaleDB (`source` "database", with a warning that says so and when it was stored); with
neither, `source` "none": nothing is served for LIQ_SYMBOLS=ALL (no stale list, no guesses), an
explicit LIQ_SYMBOLS is served as configured but unverified, and `run()` keeps retrying REST (and
the database) with capped, jittered backoff. `state()` shows all of it for the live page.

Refresh: every `LIQ_INSTRUMENTS_REFRESH_S` (and sooner, with backoff, after a failure), each venue
on its own: a venue whose refresh fails keeps its last list. A successful refresh is stored (rows the
venue stopped listing get `delisted_at`) and its effect on the tracked symbols comes back as a
`Diff` (listed, delisted per venue), so adapters subscribe and unsubscribe only those. A refresh
that would drop more than half of a venue's list (and more than `MASS_DELISTING_MIN` symbols) is
held back once: it is applied only if the next attempt agrees, so that one truncated answer does
not unsubscribe half the market for an hour.

Symbols: `symbols(exchange)` is every listed symbol for LIQ_SYMBOLS=ALL, else the configured
symbols the venue lists, in their configured order. A configured symbol the venue does not list is
logged once by name ("bybit does not list BTCUSDT_251226 ...") and kept in `state()["unlisted"]`
and `warnings()`. `candle_symbols(exchange)` narrows that by LIQ_CANDLE_SYMBOLS.

`lookup(exchange, symbol)` is the instrument a venue's list names; a symbol delisted while running
keeps its last known instrument (`listed=False`, status "delisted"); anything else is
`guess_instrument()` (`listed=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from collector.health import now_ms, one_line
from collector.instruments import VENUES
from collector.instruments.base import InstrumentsError, Listing
from collector.instruments.store import InstrumentStore, StoreError
from common.config import Settings
from common.instruments import Instrument, guess_instrument

log = logging.getLogger("collector.instruments")

REST, DATABASE, NONE = "rest", "database", "none"
REQUEST_TIMEOUT_S = 15.0  # one REST request (Bybit: one page)
RETRY_BASE_S = 5.0
RETRY_CAP_S = 300.0
MASS_DELISTING_MIN = 20

Fetch = Callable[[str, float], Awaitable[Listing]]  # (REST base URL, timeout per request) -> the list


@dataclass(frozen=True)
class Diff:
    """What changed in the tracked symbols, per venue (only venues with a change appear)."""

    listed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # now tracked, were not
    delisted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # were tracked, are not

    def __bool__(self) -> bool:
        return bool(self.listed or self.delisted)


OnChange = Callable[[Diff], Awaitable[None] | None]


@dataclass
class _Venue:
    exchange: str
    base_url: str
    fetch: Fetch
    instruments: dict[str, Instrument] = field(default_factory=dict)
    source: str = NONE
    last_refresh_ms: int = 0  # the last successful REST refresh (wall clock)
    stored_ms: int = 0  # source "database": when that list was stored
    error: str = ""  # the last attempt's error; "" when it succeeded
    failures: int = 0  # consecutive failed (or held back) attempts
    held: bool = False  # a mass delisting waits for the next attempt to agree
    next_due: float = 0.0  # monotonic
    invalid: dict[str, int] = field(default_factory=dict)  # malformed items in the last list
    tracked: tuple[str, ...] = ()  # the symbols served now (what the last Diff announced)
    unlisted: tuple[str, ...] = ()  # configured symbols the venue does not list
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one attempt at a time


class InstrumentCatalog:
    def __init__(
        self,
        settings: Settings,
        *,
        store: InstrumentStore | None = None,
        fetchers: Mapping[str, Fetch] | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        refresh_s: float | None = None,
        retry_base_s: float = RETRY_BASE_S,
        retry_cap_s: float = RETRY_CAP_S,
    ) -> None:
        self._store = store
        # Several collectors may share one database (collector/leader.py): the leader stores the lists.
        self.is_leader: Callable[[], bool] = lambda: True
        self._explicit: tuple[str, ...] | None = None if settings.all_symbols else settings.symbols
        self._candles: frozenset[str] | None = (
            None if settings.all_candle_symbols else frozenset(settings.candle_symbols)
        )
        # A configured symbol names its contract on every venue: `BTCUSDT` is OKX's `BTC-USDT-SWAP`
        # and Gate's `BTC_USDT` too (same canonical instrument), so one list serves five spellings.
        self._explicit_names = _canonical_names(self._explicit or ())
        self._candle_names = _canonical_names(self._candles or ())
        self._timeout = request_timeout_s
        self._refresh_s = float(settings.instruments_refresh_s if refresh_s is None else refresh_s)
        self._retry_base_s = retry_base_s
        self._retry_cap_s = min(retry_cap_s, self._refresh_s)
        self._venues: dict[str, _Venue] = {}
        for name in settings.exchanges:
            venue = VENUES[name]
            fetch = fetchers[name] if fetchers and name in fetchers else venue.fetch
            self._venues[name] = _Venue(name, venue.base_url(settings), fetch)
        self._retired: dict[tuple[str, str], Instrument] = {}
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self.started = False

    def watch(self, exchange: str, changed: Callable[[], None]) -> None:
        """Call `changed()` whenever what `lookup` answers for `exchange` may have changed (a list
        accepted or loaded), before anything else runs: the adapter's memo of checked instruments
        (`ExchangeAdapter.contracts`) starts over then."""
        self._watchers.setdefault(exchange, []).append(changed)

    def _changed(self, venue: _Venue) -> None:
        for changed in self._watchers.get(venue.exchange, ()):
            changed()

    # --- reading ---------------------------------------------------------------------------
    def lookup(self, exchange: str, symbol: str) -> Instrument:
        venue = self._venues.get(exchange)
        if venue is not None:
            found = venue.instruments.get(symbol)
            if found is not None:
                return found
        retired = self._retired.get((exchange, symbol))
        return retired if retired is not None else guess_instrument(exchange, symbol)

    def instruments(self, exchange: str) -> Mapping[str, Instrument]:
        """The venue's current list by symbol (read only; empty while it has none)."""
        return MappingProxyType(self._venues[exchange].instruments)

    def symbols(self, exchange: str) -> list[str]:
        """The symbols to follow on `exchange` now (liquidations always; candles: `candle_symbols`)."""
        return list(self._venues[exchange].tracked)

    def candle_symbols(self, exchange: str) -> list[str]:
        venue = self._venues[exchange]
        return [s for s in venue.tracked if self.wants_candles(s, venue.instruments.get(s))]

    def wants_candles(self, symbol: str, instrument: Instrument | None = None) -> bool:
        """LIQ_CANDLE_SYMBOLS names it, by its venue spelling or by the same contract on another venue."""
        return self._candles is None or _named(symbol, instrument, self._candles, self._candle_names)

    def has_list(self, exchange: str) -> bool:
        """True once the venue's list is known (from REST or the database)."""
        return self._venues[exchange].source != NONE

    def unlisted(self, exchange: str) -> list[str]:
        return list(self._venues[exchange].unlisted)

    def warnings(self) -> list[str]:
        """One line per venue that does not list some configured symbols, naming them."""
        return [_unlisted_text(v) for v in self._venues.values() if v.unlisted]

    def state(self) -> dict[str, dict[str, Any]]:
        """Per venue, for the live page and the CLI snapshot (JSON-ready)."""
        now = time.monotonic()
        return {
            v.exchange: {
                "instruments": len(v.instruments),
                "tracked": len(v.tracked),
                "candles": len(v.tracked) if self._candles is None else sum(s in self._candles for s in v.tracked),
                "source": v.source,
                "last_refresh_ms": v.last_refresh_ms,
                "stored_ms": v.stored_ms if v.source == DATABASE else 0,
                "error": v.error,
                "failures": v.failures,
                "next_attempt_s": round(max(0.0, v.next_due - now), 1) if self.started else 0.0,
                "unlisted": list(v.unlisted),
                "skipped": dict(v.invalid),
            }
            for v in self._venues.values()
        }

    # --- refreshing ------------------------------------------------------------------------
    async def start(self) -> Diff:
        """The first lists: REST, else the stored list, else none (see the module docstring).
        Every venue is tried at once; this returns when each has its answer (at most about
        `request_timeout_s` per request, plus the database)."""
        return await self.refresh()

    async def refresh(self, exchanges: Iterable[str] | None = None) -> Diff:
        """Fetch every configured venue (or those named) now; a venue that fails keeps its list."""
        names = list(self._venues) if exchanges is None else [e for e in exchanges if e in self._venues]
        venues = [self._venues[n] for n in names]
        async with contextlib.AsyncExitStack() as held:
            for venue in venues:  # always in the same order: two refreshes never wait on each other
                await held.enter_async_context(venue.lock)
            await asyncio.gather(*(self._attempt(v) for v in venues))
            self.started = True
            return self._retrack(venues)

    async def run(self, stop: asyncio.Event, on_change: OnChange | None = None) -> None:
        """Refresh each venue when due, each on its own, until `stop` is set; `on_change(diff)`
        after each change (a plain function or a coroutine function; its errors are logged)."""
        if not self.started:
            await self._notify(on_change, await self.start())
        await asyncio.gather(*(self._run_venue(v, stop, on_change) for v in self._venues.values()))

    async def _run_venue(self, venue: _Venue, stop: asyncio.Event, on_change: OnChange | None) -> None:
        while not stop.is_set():
            wait = venue.next_due - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                continue
            refresh = asyncio.create_task(self.refresh([venue.exchange]), name=f"instruments-{venue.exchange}")
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({refresh, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not refresh.done():  # stopping: a request in flight is abandoned
                refresh.cancel()
                await asyncio.gather(refresh, return_exceptions=True)
                return
            await self._notify(on_change, refresh.result())

    async def _notify(self, on_change: OnChange | None, diff: Diff) -> None:
        if not diff or on_change is None:
            return
        try:
            result = on_change(diff)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("instrument change callback failed for %s", diff)

    async def _attempt(self, venue: _Venue) -> None:
        """One REST attempt for `venue`; on failure, the stored list if it has none."""
        try:
            listing = await venue.fetch(venue.base_url, self._timeout)
        except Exception as exc:
            if not isinstance(exc, InstrumentsError):
                log.exception("%s: fetching the instrument list failed unexpectedly", venue.exchange)
            await self._failed(venue, one_line(str(exc)) or type(exc).__name__)
            return
        await self._accept(venue, listing)

    async def _accept(self, venue: _Venue, listing: Listing) -> None:
        new = listing.instruments
        gone = [s for s in venue.instruments if s not in new]
        if venue.source == REST and not venue.held and len(gone) > max(MASS_DELISTING_MIN, len(venue.instruments) // 2):
            venue.held = True
            venue.error = (
                f"held back a list without {len(gone)} of its {len(venue.instruments)} instruments; "
                "applied if the next attempt agrees"
            )
            log.warning("%s: %s", venue.exchange, venue.error)
            self._schedule_retry(venue)
            return
        recovered = venue.failures > 0 and not venue.held
        for symbol in gone:
            old = venue.instruments[symbol]
            self._retired[(venue.exchange, symbol)] = dataclasses.replace(old, listed=False, status="delisted")
        for symbol in new:
            self._retired.pop((venue.exchange, symbol), None)
        was = venue.source
        venue.instruments = dict(new)
        self._changed(venue)
        venue.source, venue.error, venue.failures, venue.held = REST, "", 0, False
        venue.last_refresh_ms, venue.stored_ms = now_ms(), 0
        venue.invalid = dict(listing.invalid)
        venue.next_due = time.monotonic() + self._refresh_s
        level = logging.WARNING if listing.invalid else logging.INFO
        log.log(level, "%s: %s", venue.exchange, listing.summary())
        if recovered or was == DATABASE:
            log.info("%s: the instrument list answers again (it was %s)", venue.exchange, was)
        if self._store is not None and self.is_leader():  # one collector of several writes the lists
            try:
                delisted = await self._store.save(venue.exchange, new.values())
            except StoreError as exc:
                log.warning("%s: the instrument list was not stored (%s)", venue.exchange, exc)
            else:
                if delisted:
                    log.info("%s: %d instruments marked delisted in the database", venue.exchange, delisted)

    async def _failed(self, venue: _Venue, error: str) -> None:
        if venue.failures == 0 or error != venue.error:
            kept = (
                f"keeping the {venue.source} list of {len(venue.instruments)}" if venue.instruments else "no list yet"
            )
            log.warning("%s: instrument list unavailable (%s): %s", venue.exchange, error, kept)
        venue.error = error
        venue.held = False
        self._schedule_retry(venue)
        if venue.source == NONE:
            await self._fall_back(venue)

    async def _fall_back(self, venue: _Venue) -> None:
        """No list at all: the last one stored in TimescaleDB, if any."""
        stored = None
        if self._store is not None:
            try:
                stored = await self._store.load(venue.exchange)
            except StoreError as exc:
                if venue.failures == 1:
                    log.warning("%s: no stored instrument list either (%s)", venue.exchange, exc)
        if stored is None:
            if venue.failures == 1:
                log.warning(
                    "%s: no instrument list from REST or the database: %s; retrying",
                    venue.exchange,
                    "following nothing"
                    if self._explicit is None
                    else f"following the configured {', '.join(self._explicit)} unverified",
                )
            return
        venue.instruments = dict(stored.instruments)
        self._changed(venue)
        venue.source, venue.stored_ms = DATABASE, stored.stored_ms
        log.warning(
            "%s: REST unreachable at start: starting on the %d instruments stored at %s; "
            "REST is retried and replaces them when it answers",
            venue.exchange,
            len(stored.instruments),
            time.strftime("%Y%m%d %H:%M:%S UTC", time.gmtime(stored.stored_ms / 1000)),
        )

    def _schedule_retry(self, venue: _Venue) -> None:
        venue.failures += 1
        delay = min(self._retry_cap_s, self._retry_base_s * 2 ** min(venue.failures - 1, 30))
        venue.next_due = time.monotonic() + delay * random.uniform(0.75, 1.0)

    def _retrack(self, venues: Iterable[_Venue]) -> Diff:
        """Recompute what each venue serves; the Diff is what changed."""
        diff = Diff()
        for venue in venues:
            tracked = self._tracked(venue)
            before = set(venue.tracked)
            after = set(tracked)
            listed = tuple(s for s in tracked if s not in before)
            delisted = tuple(s for s in venue.tracked if s not in after)
            venue.tracked = tracked
            if listed:
                diff.listed[venue.exchange] = listed
            if delisted:
                diff.delisted[venue.exchange] = delisted
            unlisted = (
                ()
                if venue.source == NONE or self._explicit is None
                else tuple(s for s in self._explicit if not _names_any(s, venue.instruments))
            )
            if unlisted != venue.unlisted:
                venue.unlisted = unlisted
                if unlisted:
                    log.warning("%s", _unlisted_text(venue))
        return diff

    def _tracked(self, venue: _Venue) -> tuple[str, ...]:
        if self._explicit is None:
            return tuple(sorted(venue.instruments))
        if venue.source == NONE:
            return self._explicit
        order = {s: i for i, s in enumerate(self._explicit)}
        names = self._explicit_names
        found = [
            (order.get(s, order.get(names.get(inst.canonical, ""), len(order))), s)
            for s, inst in venue.instruments.items()
            if _named(s, inst, frozenset(self._explicit), names)
        ]
        return tuple(s for _, s in sorted(found))


def _canonical_names(symbols: Iterable[str]) -> dict[str, str]:
    """canonical instrument -> the configured symbol that names it (`BTC-USDT-PERP` -> `BTCUSDT`)."""
    out: dict[str, str] = {}
    for symbol in symbols:
        inst = guess_instrument("", symbol)
        if inst.quote:  # a symbol read as base + USDT/USDC: it names that contract on every venue
            out.setdefault(inst.canonical, symbol)
    return out


def _named(symbol: str, instrument: Instrument | None, exact: frozenset[str], canonical: dict[str, str]) -> bool:
    return symbol in exact or (instrument is not None and instrument.canonical in canonical)


def _names_any(configured: str, instruments: Mapping[str, Instrument]) -> bool:
    """The venue lists `configured` itself or a contract with the same canonical instrument."""
    if configured in instruments:
        return True
    wanted = guess_instrument("", configured)
    return bool(wanted.quote) and any(i.canonical == wanted.canonical for i in instruments.values())


def _unlisted_text(venue: _Venue) -> str:
    where = "" if venue.source == REST else f" (per its {venue.source} list)"
    names = ", ".join(venue.unlisted)
    return f"{venue.exchange} does not list {names}{where}: named in LIQ_SYMBOLS, not followed there"
