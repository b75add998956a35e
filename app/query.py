"""The one filter of the app: `Query`, parsed from the URL in one place, and its rules.

A `Query` says what every page, download and CLI command reads: a target (the whole market, a
coin, or one venue's contract), the venues, a time range, a side, the sources (live only, or every
source: one polarity, `include_nonlive`) and a minimum size in USD. It is frozen and hashable, so
it keys the cache (app/cache.py) as it is. No Streamlit and no database here: the CLI, the data
layer (app/data/) and the tests use it directly.

Targets (URL `target`):
    ALL                 the whole market (USD only: base amounts of different coins do not add up)
    BTC                 a coin: the canonical base asset, every contract of it on every venue
                        (the `instruments` table, `common.instruments.guess_instrument` for others)
    binance:BTCUSDT     one venue's contract
    symbol=BTCUSDT      (old links) that venue symbol on every venue that lists it, as before
A target is resolved against a `Catalog` (every known venue symbol and its coin) when parsed:
`Target.pairs` are the (exchange, venue symbol) pairs it covers.

URL parameters (defaults are left out of links, see `Query.to_params`):
    target      ALL | BTC | binance:BTCUSDT       default: the configured default symbol
    symbol      old links: a venue symbol or ALL  (read when `target` is absent)
    exchanges   comma list of venues              default: every configured venue
    hours       1 .. MAX_HOURS, or "all"          default: all (whole history)
    since/until YYYYMMDD (UTC days, until inclusive); override hours
    side        ALL | LONG | SHORT                default: ALL (old `c_side` / `hm_side` are read too)
    nonlive     1: include replay/test data       default: 0 (live only)
    min_usd     minimum single liquidation, USD   default: 0 (old `c_min` is read too)
    interval    auto | 1m | 5m | 15m | 1h | 4h | 1d (chart and analyses bars)
    markers     0: hide institutional-size markers on the chart

The rules every page follows:
- "now" is `now_ms()`: the clock rounded up to NOW_STEP_MS, so reruns within a step share cache
  entries (the cache lifetime, app/cache.py CACHE_TTL_S, is the same step).
- "whole history" starts at the first event the query matches (or an hour before now if none).
- cascades "in a range" are the ones overlapping it (started before its end, ended at or after
  its start); `CASCADE_RULE` says so in the pages' captions.
- the minimum size applies to lists of single liquidations and cascades (Explorer, the chart's
  markers, the latest tables, the Cascades list); totals, bars and heatmaps count every size
  (they come from the rollups); `MIN_USD_RULE` says so where it matters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property

from common.instruments import guess_instrument
from common.symbols import valid_symbol
from common.venues import NAMES as VENUES

ALL = "ALL"
MAX_HOURS = 10 * 8760  # ten years: anything beyond is hostile input, not a range
MAX_MIN_USD = 10**12
HOUR_MS = 3_600_000
NOW_STEP_MS = 10_000  # "now" is rounded up to this; app/cache.py keeps results this long
HOURS_CHOICES: tuple[int | None, ...] = (1, 2, 4, 8, 12, 24, 72, 168, 336, 720, 2160, 4380, 8760, None)
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
INTERVALS: tuple[str, ...] = ("auto", *INTERVAL_MS)
SIDES: tuple[str, ...] = (ALL, "LONG", "SHORT")
CASCADE_RULE = "cascades counted: those overlapping the range"
MIN_USD_RULE = "the minimum size applies to lists of single liquidations and cascades, not to totals"
QUERY_PARAMS = (
    "target", "symbol", "exchanges", "hours", "since", "until", "side", "nonlive", "min_usd", "interval", "markers",
)  # fmt: skip
_LEGACY_PARAMS = ("c_side", "hm_side", "c_min")  # read once, then replaced by side / min_usd
_DATE_RE = re.compile(r"^\d{8}$")
_MAX_PARAM_CHARS = 200

ALL_KIND, COIN, CONTRACT, SYMBOL = "all", "coin", "contract", "symbol"


def now_ms() -> int:
    """The one "now" of every range: the clock rounded up to NOW_STEP_MS."""
    return -(-time.time_ns() // 1_000_000 // NOW_STEP_MS) * NOW_STEP_MS


@dataclass(frozen=True)
class Listing:
    """One venue symbol the app knows, and its coin (canonical base asset)."""

    exchange: str
    symbol: str
    coin: str


@dataclass(frozen=True)
class Catalog:
    """Every venue symbol the app knows (instrument lists and stored liquidations)."""

    listings: tuple[Listing, ...] = ()

    def _grouped(self, key: Callable[[Listing], str]) -> dict[str, tuple[tuple[str, str], ...]]:
        """(exchange, symbol) pairs per `key` of a listing, sorted."""
        out: dict[str, list[tuple[str, str]]] = {}
        for li in self.listings:
            out.setdefault(key(li), []).append((li.exchange, li.symbol))
        return {name: tuple(sorted(pairs)) for name, pairs in out.items()}

    @cached_property
    def _by_coin(self) -> dict[str, tuple[tuple[str, str], ...]]:
        return self._grouped(lambda li: li.coin)

    @cached_property
    def _by_symbol(self) -> dict[str, tuple[tuple[str, str], ...]]:
        return self._grouped(lambda li: li.symbol)

    def coins(self) -> list[str]:
        return sorted(self._by_coin)

    def of_coin(self, coin: str) -> tuple[tuple[str, str], ...]:
        return self._by_coin.get(coin, ())

    def of_symbol(self, symbol: str) -> tuple[tuple[str, str], ...]:
        return self._by_symbol.get(symbol, ())

    def has(self, exchange: str, symbol: str) -> bool:
        return (exchange, symbol) in self._by_symbol.get(symbol, ())


def catalog_of(pairs: Iterable[tuple[str, str, str | None]]) -> Catalog:
    """A Catalog from (exchange, symbol, coin or None) rows; a missing coin is guessed from the symbol.
    Names that could not be a venue symbol are left out (they are never offered nor put in a link)."""
    out: dict[tuple[str, str], str] = {}
    for exchange, symbol, coin in pairs:
        if not valid_symbol(symbol) or exchange not in VENUES:
            continue
        out.setdefault((exchange, symbol), coin or guess_instrument(exchange, symbol).base)
    return Catalog(tuple(Listing(e, s, c) for (e, s), c in sorted(out.items())))


@dataclass(frozen=True)
class Target:
    """What to read: the whole market, a coin, a venue's contract, or (old links) a venue symbol."""

    kind: str = ALL_KIND
    name: str = ""  # the coin, or the venue symbol
    exchange: str = ""  # a contract's venue
    # (exchange, venue symbol) covered: resolved from the catalog, so not part of the target's identity
    # (a coin stays the same coin when a venue lists one more contract of it; see `refreshed`).
    pairs: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def is_all(self) -> bool:
        return self.kind == ALL_KIND

    @property
    def param(self) -> str:
        """The target's URL value (old-link symbol targets keep `symbol=`; see Query.to_params)."""
        if self.kind == COIN:
            return self.name
        if self.kind == CONTRACT:
            return f"{self.exchange}:{self.name}"
        return ALL if self.kind == ALL_KIND else self.name

    @property
    def label(self) -> str:
        """How the picker and the captions name it."""
        if self.kind == COIN:
            return f"{self.name} (all contracts)"
        if self.kind == CONTRACT:
            return f"{self.exchange}: {self.name}"
        if self.kind == SYMBOL:
            return f"{self.name} (every venue)"
        return "ALL (whole market)"

    @property
    def unit(self) -> str | None:
        """The base unit amounts are counted in (BTC), or None for the whole market (USD only)."""
        if self.kind == COIN:
            return self.name
        if self.kind in (CONTRACT, SYMBOL):
            exchange = self.exchange or (self.pairs[0][0] if self.pairs else VENUES[0])
            return guess_instrument(exchange, self.name).base
        return None

    @property
    def symbols(self) -> tuple[str, ...] | None:
        """The venue symbols to match, or None for every symbol."""
        return None if self.is_all else tuple(sorted({s for _e, s in self.pairs}))


def refreshed(target: Target, catalog: Catalog, exchanges: Sequence[str]) -> Target:
    """The same target resolved against the current catalog (its contracts may have changed)."""
    if target.kind == COIN:
        return coin_target(target.name, catalog)
    if target.kind == SYMBOL:
        return symbol_target(target.name, catalog, exchanges)
    return target


def all_target() -> Target:
    return Target()


def coin_target(coin: str, catalog: Catalog) -> Target:
    return Target(COIN, coin, "", catalog.of_coin(coin))


def contract_target(exchange: str, symbol: str) -> Target:
    return Target(CONTRACT, symbol, exchange, ((exchange, symbol),))


def symbol_target(symbol: str, catalog: Catalog, exchanges: Sequence[str]) -> Target:
    """A venue symbol on every venue: where the catalog lists it, else on every given venue."""
    pairs = catalog.of_symbol(symbol) or tuple((e, symbol) for e in exchanges)
    return Target(SYMBOL, symbol, "", pairs)


@dataclass(frozen=True)
class Query:
    target: Target = field(default_factory=all_target)
    exchanges: tuple[str, ...] = VENUES  # the venues chosen in the sidebar
    hours: int | None = None  # None: whole history (unless since is set)
    since: date | None = None
    until: date | None = None  # inclusive
    side: str | None = None  # LONG | SHORT | None (both)
    include_nonlive: bool = False
    min_usd: Decimal = Decimal(0)
    interval: str = "auto"
    markers: bool = True

    # --- what to match -------------------------------------------------------------------------

    @property
    def venues(self) -> tuple[str, ...]:
        """The venues read: the chosen ones, narrowed to those the target has symbols on."""
        if self.target.is_all:
            return self.exchanges
        covered = {e for e, _s in self.target.pairs}
        return tuple(e for e in self.exchanges if e in covered)

    @property
    def symbols(self) -> tuple[str, ...] | None:
        return self.target.symbols

    @property
    def is_all(self) -> bool:
        return self.target.is_all

    @property
    def unit(self) -> str | None:
        return self.target.unit

    @property
    def side_label(self) -> str:
        return self.side or ALL

    # --- the range -----------------------------------------------------------------------------

    @property
    def whole_history(self) -> bool:
        return self.hours is None and self.since is None

    def time_range(self, now: int, first_ms: int | None = None) -> tuple[int, int]:
        """[start, end) in epoch ms. Whole history starts at the first matching event (`first_ms`,
        or an hour before `now` when nothing matches)."""
        if self.since is not None:
            start = _day_ms(self.since)
            until = self.until or datetime.fromtimestamp(now / 1000, tz=UTC).date()
            end = min(_day_ms(until + timedelta(days=1)), now)
            return start, max(start, end)
        if self.hours is not None:
            return now - self.hours * HOUR_MS, now
        start = first_ms if first_ms is not None and first_ms < now else now - HOUR_MS
        return start, now

    def range_label(self) -> str:
        if self.since is not None:
            until = self.until.strftime("%Y%m%d") if self.until else "today"
            return f"{self.since:%Y%m%d} .. {until}"
        return hours_label(self.hours)

    def bar_interval(self, span_ms: int) -> str:
        """The chosen interval, or the one that follows the span when `auto`."""
        return self.interval if self.interval != "auto" else auto_interval(span_ms)

    # --- words and links -----------------------------------------------------------------------

    def describe(self, start_ms: int | None = None, end_ms: int | None = None) -> str:
        """One line naming the filter (download headers, captions); the range as UTC times when given."""
        span = self.range_label()
        if start_ms is not None and end_ms is not None:
            span = f"{_stamp(start_ms)} .. {_stamp(end_ms)} UTC"
        parts = [
            f"target {self.target.label}",
            f"exchanges {','.join(self.venues) or 'none'}",
            f"range {span}",
            f"side {self.side_label}",
            "all sources (includes non-live)" if self.include_nonlive else "live only",
        ]
        if self.min_usd > 0:
            parts.append(f"minimum {self.min_usd:f} USD")
        return "; ".join(parts)

    def to_params(self, default: Target | None = None, all_exchanges: Sequence[str] = VENUES) -> dict[str, str]:
        """Non-default values as URL parameters (the inverse of `parse_query`)."""
        out: dict[str, str] = {}
        if default is None or self.target != default:
            if self.target.kind == SYMBOL:
                out["symbol"] = self.target.name
            else:
                out["target"] = self.target.param
        if tuple(sorted(self.exchanges)) != tuple(sorted(all_exchanges)):
            out["exchanges"] = ",".join(self.exchanges)
        if self.since is not None:
            out["since"] = f"{self.since:%Y%m%d}"
            if self.until is not None:
                out["until"] = f"{self.until:%Y%m%d}"
        elif self.hours is not None:
            out["hours"] = str(self.hours)
        if self.side is not None:
            out["side"] = self.side
        if self.include_nonlive:
            out["nonlive"] = "1"
        if self.min_usd > 0:
            out["min_usd"] = f"{self.min_usd:f}"
        if self.interval != "auto":
            out["interval"] = self.interval
        if not self.markers:
            out["markers"] = "0"
        return out

    def with_changes(self, **changes: object) -> Query:
        return replace(self, **changes)  # type: ignore[arg-type]


def hours_label(hours: int | None) -> str:
    if hours is None:
        return "whole history"
    if hours % 24 == 0 and hours >= 48:
        return f"{hours // 24} days"
    return f"{hours} h"


def auto_interval(span_ms: int) -> str:
    """1 h -> 1m, 24 h -> 5m, 3 d -> 15m, 7 d -> 1h, 30 d -> 4h, longer -> 1d (a few hundred bars)."""
    hours = span_ms / HOUR_MS
    if hours <= 2:
        return "1m"
    if hours <= 36:
        return "5m"
    if hours <= 96:
        return "15m"
    if hours <= 8 * 24:
        return "1h"
    if hours <= 45 * 24:
        return "4h"
    return "1d"


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _stamp(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, tz=UTC):%Y%m%d %H:%M:%S}"


# --- parsing -----------------------------------------------------------------------------------


def _short(value: str) -> str:
    """A refused value as shown back to the user: trimmed, never the whole payload."""
    return value if len(value) <= 40 else value[:40] + "…"


def _raw(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    return "" if value is None else str(value)[:_MAX_PARAM_CHARS].strip()


def _parse_day(raw: str, name: str, warnings: list[str]) -> date | None:
    if not _DATE_RE.match(raw):
        warnings.append(f"Ignored {name}={_short(raw)!r}: expected a date as YYYYMMDD.")
        return None
    try:
        return datetime.strptime(raw, "%Y%m%d").date()
    except ValueError:
        warnings.append(f"Ignored {name}={_short(raw)!r}: not a real date.")
        return None


def param_int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int, warnings: list[str]) -> int:
    """A whole-number URL parameter in [lo, hi]; anything else warns and gives the default."""
    raw = _raw(params, name)
    if not raw:
        return default
    if not re.fullmatch(r"-?\d{1,12}", raw) or not lo <= int(raw) <= hi:
        warnings.append(f"Ignored {name}={_short(raw)!r}: expected a whole number from {lo} to {hi}.")
        return default
    return int(raw)


def param_choice(
    params: Mapping[str, str], name: str, choices: Sequence[str], default: str, warnings: list[str]
) -> str:
    """A URL parameter that must be one of `choices` (case-insensitive); else warns, gives the default."""
    raw = _raw(params, name)
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    warnings.append(f"Ignored {name}={_short(raw)!r}: expected one of {', '.join(choices)}.")
    return default


def param_usd(params: Mapping[str, str], name: str, warnings: list[str]) -> Decimal | None:
    """A USD amount 0 .. MAX_MIN_USD (decimal text like 250000 or 2.5e5), whole dollars; None if absent
    or refused (with a warning)."""
    raw = _raw(params, name)[:40]
    if not raw:
        return None
    try:
        value = Decimal(raw)
        if value.is_finite() and 0 <= value <= MAX_MIN_USD:
            return Decimal(int(value))
    except InvalidOperation:
        pass
    warnings.append(f"Ignored {name}={_short(raw)!r}: expected a USD amount from 0 to {MAX_MIN_USD:,}.")
    return None


def _param_flag(params: Mapping[str, str], name: str, default: bool, warnings: list[str]) -> bool:
    value = _raw(params, name).lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    warnings.append(f"Ignored {name}={_short(value)!r}: expected 1 or 0.")
    return default


def default_target(default_symbol: str, catalog: Catalog, exchanges: Sequence[str]) -> Target:
    """The target a link without one means: the configured default symbol (as before), or ALL."""
    if default_symbol.upper() == ALL or not valid_symbol(default_symbol):
        return all_target()
    return symbol_target(default_symbol, catalog, exchanges)


def parse_target(raw: str, catalog: Catalog, exchanges: Sequence[str], warnings: list[str]) -> Target | None:
    """`ALL`, a coin, `exchange:symbol`; None (with a warning) when the catalog knows no such thing."""
    if raw.upper() == ALL:
        return all_target()
    exchange, sep, symbol = raw.partition(":")
    if sep:
        exchange = exchange.strip().lower()
        symbol = symbol.strip()
        if exchange in exchanges and valid_symbol(symbol) and catalog.has(exchange, symbol):
            return contract_target(exchange, symbol)
        warnings.append(f"Unknown contract {_short(raw)!r}.")
        return None
    coin = raw.upper()
    if valid_symbol(coin) and catalog.of_coin(coin):
        return coin_target(coin, catalog)
    warnings.append(f"Unknown coin {_short(raw)!r}.")
    return None


def parse_query(
    params: Mapping[str, str],
    catalog: Catalog,
    exchanges: Sequence[str] = VENUES,
    default_symbol: str = ALL,
    today: date | None = None,
) -> tuple[Query, list[str]]:
    """Validate URL parameters into a Query; each refused value falls back to its default with a
    warning, never a traceback."""
    warnings: list[str] = []
    all_exchanges = tuple(exchanges)
    default = default_target(default_symbol, catalog, all_exchanges)

    target: Target | None = None
    raw_target = _raw(params, "target")
    raw_symbol = _raw(params, "symbol")
    if raw_target:
        target = parse_target(raw_target, catalog, all_exchanges, warnings)
    elif raw_symbol:  # old links: a venue symbol on every venue, or ALL
        symbol = raw_symbol.upper()
        if symbol == ALL:
            target = all_target()
        elif valid_symbol(symbol):  # known or not (yet): as before, that name on every venue
            target = symbol_target(symbol, catalog, all_exchanges)
        else:
            warnings.append(f"Unknown symbol {_short(raw_symbol)!r}.")
    if target is None and (raw_target or raw_symbol):
        warnings[-1] += f" Showing {default.label}."
    target = target or default

    chosen = all_exchanges
    raw_exchanges = _raw(params, "exchanges").lower()
    if raw_exchanges:
        items = [e.strip() for e in raw_exchanges.split(",") if e.strip()]
        bad = [e for e in items if e not in all_exchanges]
        good = tuple(dict.fromkeys(e for e in items if e in all_exchanges))
        if bad:
            warnings.append(f"Ignored unknown exchange(s) {_short(', '.join(bad))!r}.")
        chosen = good or all_exchanges
    if not target.is_all and not any(e in chosen for e, _s in target.pairs):
        warnings.append(f"{target.label} is not on the chosen exchanges: nothing matches.")

    hours: int | None = None
    raw_hours = _raw(params, "hours").lower()
    if raw_hours and raw_hours != "all":
        hours = param_int({"hours": raw_hours}, "hours", 0, 1, MAX_HOURS, warnings) or None

    today = today or datetime.now(UTC).date()
    since = _parse_day(_raw(params, "since"), "since", warnings) if _raw(params, "since") else None
    until = _parse_day(_raw(params, "until"), "until", warnings) if _raw(params, "until") else None
    if since is not None and since > today:
        warnings.append(f"Ignored since={since:%Y%m%d}: it is in the future.")
        since = None
    if since is None and until is not None:
        warnings.append("Ignored until: it needs a since date as well.")
        until = None
    if since is not None and until is not None and until < since:
        warnings.append(f"Ignored until={until:%Y%m%d}: it is before since={since:%Y%m%d}.")
        until = None

    side_name = next((n for n in ("side", "c_side", "hm_side") if _raw(params, n)), "side")
    side = param_choice(params, side_name, SIDES, ALL, warnings)
    min_name = "c_min" if not _raw(params, "min_usd") and _raw(params, "c_min") else "min_usd"
    min_usd = param_usd(params, min_name, warnings) or Decimal(0)

    query = Query(
        target=target,
        exchanges=chosen,
        hours=hours,
        since=since,
        until=until,
        side=None if side == ALL else side,
        include_nonlive=_param_flag(params, "nonlive", False, warnings),
        min_usd=min_usd,
        interval=param_choice(params, "interval", INTERVALS, "auto", warnings),
        markers=_param_flag(params, "markers", True, warnings),
    )
    return query, warnings


LEGACY_PARAMS = _LEGACY_PARAMS
