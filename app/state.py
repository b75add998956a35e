"""The view state of the app, kept in the URL so that a pasted link reproduces the view.

`parse_state(params, ...)` turns `st.query_params` (or any str -> str mapping) into a validated
`ViewState` plus a list of human-readable warnings for values it refused; a refused value falls
back to its default, never to a traceback. `ViewState.to_params()` is the inverse (defaults are
left out so links stay short). No Streamlit import here: the CLI and tests use it directly.

URL parameters (shared by every page):
    symbol      BTCUSDT | 币安人生USDT | ... | ALL (ALL sums USD)     default: BTCUSDT
                (a known symbol that passes common.symbols.valid_symbol; URL-encoded in links)
    exchanges   comma list of binance,bybit                          default: all configured
    hours       1 .. MAX_HOURS, or "all" (whole history)             default: all
    since/until YYYYMMDD (UTC days, until inclusive); override hours
    interval    auto | 1m | 5m | 15m | 1h | 4h | 1d                  default: auto
    side        ALL | LONG | SHORT                                   default: ALL
    nonlive     1 to include replay/test data (a banner says so)     default: 0
    markers     0 to hide institutional-size markers on the chart   default: 1
Pages may read extra parameters of their own with `param_int` / `param_choice`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from common import venues
from common.symbols import valid_symbol

ALL = "ALL"
MAX_HOURS = 10 * 8760  # ten years: anything beyond is hostile input, not a range
HOUR_MS = 3_600_000
# The choices of the hours slider (None = whole history).
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
_DATE_RE = re.compile(r"^\d{8}$")
_MAX_PARAM_CHARS = 200


@dataclass(frozen=True)
class ViewState:
    symbol: str = "BTCUSDT"
    exchanges: tuple[str, ...] = venues.NAMES
    hours: int | None = None  # None: whole history
    since: date | None = None
    until: date | None = None  # inclusive
    interval: str = "auto"
    side: str = ALL
    include_nonlive: bool = False
    markers: bool = True

    @property
    def live_only(self) -> bool:
        return not self.include_nonlive

    @property
    def symbol_filter(self) -> str | None:
        """The symbol to filter on, or None for ALL."""
        return None if self.symbol == ALL else self.symbol

    @property
    def side_filter(self) -> str | None:
        return None if self.side == ALL else self.side

    def time_range(self, now_ms: int, first_ms: int | None = None) -> tuple[int, int]:
        """[start, end) in epoch ms. Whole history starts at the first event (or an hour ago if none)."""
        if self.since is not None:
            start = _day_ms(self.since)
            until = self.until or datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
            end = min(_day_ms(until + timedelta(days=1)), now_ms)
            return start, max(start, end)
        if self.hours is not None:
            return now_ms - self.hours * HOUR_MS, now_ms
        start = first_ms if first_ms is not None and first_ms < now_ms else now_ms - HOUR_MS
        return start, now_ms

    def range_label(self) -> str:
        if self.since is not None:
            until = self.until.strftime("%Y%m%d") if self.until else "today"
            return f"{self.since:%Y%m%d} .. {until}"
        return hours_label(self.hours)

    def describe(self) -> str:
        """One line naming the filter, for download headers and captions."""
        side = "" if self.side == ALL else f" side={self.side}"
        data = "all sources (includes non-live)" if self.include_nonlive else "live only"
        return f"symbol={self.symbol} exchanges={','.join(self.exchanges)} range={self.range_label()}{side} {data}"

    def bar_interval(self, span_ms: int) -> str:
        """The chosen interval, or the one that follows the span when `auto`."""
        return self.interval if self.interval != "auto" else auto_interval(span_ms)

    def to_params(self, default_symbol: str = "BTCUSDT", all_exchanges: Sequence[str] = ()) -> dict[str, str]:
        """Non-default values as URL parameters."""
        out: dict[str, str] = {}
        if self.symbol != default_symbol:
            out["symbol"] = self.symbol
        if tuple(sorted(self.exchanges)) != tuple(sorted(all_exchanges)):
            out["exchanges"] = ",".join(self.exchanges)
        if self.since is not None:
            out["since"] = f"{self.since:%Y%m%d}"
            if self.until is not None:
                out["until"] = f"{self.until:%Y%m%d}"
        elif self.hours is not None:
            out["hours"] = str(self.hours)
        if self.interval != "auto":
            out["interval"] = self.interval
        if self.side != ALL:
            out["side"] = self.side
        if self.include_nonlive:
            out["nonlive"] = "1"
        if not self.markers:
            out["markers"] = "0"
        return out

    def with_changes(self, **changes: object) -> ViewState:
        return replace(self, **changes)  # type: ignore[arg-type]


STATE_PARAMS = ("symbol", "exchanges", "hours", "since", "until", "interval", "side", "nonlive", "markers")


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


def _short(value: str) -> str:
    """A refused value as shown back to the user: trimmed, never the whole payload."""
    return value if len(value) <= 40 else value[:40] + "…"


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
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    raw = str(raw)[:_MAX_PARAM_CHARS].strip()
    if not re.fullmatch(r"-?\d{1,12}", raw) or not lo <= int(raw) <= hi:
        warnings.append(f"Ignored {name}={_short(raw)!r}: expected a whole number from {lo} to {hi}.")
        return default
    return int(raw)


MAX_MIN_USD = 10**12


def url_min_usd(name: str) -> int:
    """A minimum-USD URL parameter (0 .. MAX_MIN_USD, decimal text like 250000 or 2.5e5); a bad
    value warns on the page, is removed from the URL, and gives 0. Not a bound widget on purpose:
    Streamlit's bound number_input crashes on values like 1e400."""
    import streamlit as st

    raw = str(st.query_params.get(name) or "")[:40]
    if not raw:
        return 0
    try:
        value = Decimal(raw)
        if value.is_finite() and 0 <= value <= MAX_MIN_USD:
            return int(value)
    except InvalidOperation:
        pass
    from app.format import plain_md

    st.warning(
        f"Ignored {name}={plain_md(repr(raw))}: expected a USD amount from 0 to {MAX_MIN_USD:,}.",
        icon=":material/warning:",
    )
    del st.query_params[name]
    return 0


def param_choice(
    params: Mapping[str, str], name: str, choices: Sequence[str], default: str, warnings: list[str]
) -> str:
    """A URL parameter that must be one of `choices` (case-insensitive); else warns, gives the default."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    raw = str(raw)[:_MAX_PARAM_CHARS].strip()
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    warnings.append(f"Ignored {name}={_short(raw)!r}: expected one of {', '.join(choices)}.")
    return default


def _param_flag(params: Mapping[str, str], name: str, default: bool, warnings: list[str]) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    value = str(raw)[:_MAX_PARAM_CHARS].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    warnings.append(f"Ignored {name}={_short(value)!r}: expected 1 or 0.")
    return default


def parse_state(
    params: Mapping[str, str],
    known_symbols: Sequence[str],
    exchanges: Sequence[str],
    default_symbol: str = "BTCUSDT",
    today: date | None = None,
) -> tuple[ViewState, list[str]]:
    """Validate URL parameters; refused values fall back to defaults with a warning each."""
    warnings: list[str] = []
    known = [s for s in known_symbols if s]
    if default_symbol not in known:
        default_symbol = known[0] if known else default_symbol
    all_exchanges = tuple(exchanges)

    symbol = default_symbol
    raw_symbol = str(params.get("symbol") or "")[:_MAX_PARAM_CHARS].strip().upper()
    if raw_symbol:
        if raw_symbol == ALL or (valid_symbol(raw_symbol) and raw_symbol in known):
            symbol = raw_symbol
        else:
            warnings.append(f"Unknown symbol {_short(raw_symbol)!r}; showing {default_symbol}.")

    chosen = all_exchanges
    raw_exchanges = str(params.get("exchanges") or "")[:_MAX_PARAM_CHARS].strip().lower()
    if raw_exchanges:
        items = [e.strip() for e in raw_exchanges.split(",") if e.strip()]
        bad = [e for e in items if e not in all_exchanges]
        good = tuple(dict.fromkeys(e for e in items if e in all_exchanges))
        if bad:
            warnings.append(f"Ignored unknown exchange(s) {_short(', '.join(bad))!r}.")
        chosen = good or all_exchanges

    hours: int | None = None
    raw_hours = str(params.get("hours") or "")[:_MAX_PARAM_CHARS].strip().lower()
    if raw_hours and raw_hours != "all":
        hours = param_int({"hours": raw_hours}, "hours", 0, 1, MAX_HOURS, warnings) or None

    today = today or datetime.now(UTC).date()
    since = _parse_day(str(params["since"])[:_MAX_PARAM_CHARS], "since", warnings) if params.get("since") else None
    until = _parse_day(str(params["until"])[:_MAX_PARAM_CHARS], "until", warnings) if params.get("until") else None
    if since is not None and since > today:
        warnings.append(f"Ignored since={since:%Y%m%d}: it is in the future.")
        since = None
    if since is None and until is not None:
        warnings.append("Ignored until: it needs a since date as well.")
        until = None
    if since is not None and until is not None and until < since:
        warnings.append(f"Ignored until={until:%Y%m%d}: it is before since={since:%Y%m%d}.")
        until = None

    state = ViewState(
        symbol=symbol,
        exchanges=chosen,
        hours=hours,
        since=since,
        until=until,
        interval=param_choice(params, "interval", INTERVALS, "auto", warnings),
        side=param_choice(params, "side", SIDES, ALL, warnings),
        include_nonlive=_param_flag(params, "nonlive", False, warnings),
        markers=_param_flag(params, "markers", True, warnings),
    )
    return state, warnings


# --- The current view inside a Streamlit session (pages call these; main.py sets them up) ---

SESSION_KEY = "view_state"
_DEFAULTS_KEY = "view_defaults"


def current_view() -> ViewState:
    """The view the sidebar (app/main.py) settled on for this run.

    Checks this session's access first (app.gate.require_session_access): fragments rerun
    without the frame, and a page that forgot `require_access()` still shows nothing ungated.
    """
    import streamlit as st

    from app.gate import require_session_access

    require_session_access()
    state = st.session_state.get(SESSION_KEY)
    return state if isinstance(state, ViewState) else ViewState()


def set_view(state: ViewState) -> None:
    """Make `state` current and mirror it into the URL (our parameters only; others stay)."""
    import streamlit as st

    st.session_state[SESSION_KEY] = state
    default_symbol, all_exchanges = st.session_state.get(_DEFAULTS_KEY, ("BTCUSDT", state.exchanges))
    wanted = state.to_params(default_symbol, all_exchanges)
    for name in STATE_PARAMS:
        if name in wanted:
            if st.query_params.get(name) != wanted[name]:
                st.query_params[name] = wanted[name]
        elif name in st.query_params:
            del st.query_params[name]


def remember_defaults(default_symbol: str, all_exchanges: Sequence[str]) -> None:
    import streamlit as st

    st.session_state[_DEFAULTS_KEY] = (default_symbol, tuple(all_exchanges))
