"""How every figure in the app and the CLI is written, in one place.

Users asked for dates as YYYYMMDD and times as HH:MM:SS UTC everywhere, USD with thousands
separators and cents, base quantities with 4 decimals and percentages with 1 decimal. LONG
liquidations are red and SHORT ones green in every chart and table.

Public API (stable, also used by the pages and app/cli.py):
    fmt_usd(x) -> "$1,234,567.89"          fmt_qty(x) -> "1,234.5678"
    fmt_pct(x) -> "12.3%"                  fmt_count(n) -> "12,345"
    fmt_date(t) -> "20260125"              fmt_time(t) -> "13:05:09"
    fmt_datetime(t) -> "20260125 13:05:09 UTC"
    fmt_duration(seconds) -> "3d 04:05:06" fmt_age(seconds) -> "12.3 s ago"
    share_pct(part, total) -> Decimal | None
    LONG_COLOR, SHORT_COLOR, SIDE_COLORS, LONG_SHORT_LABEL, lower_bound(exchanges)
    agg_table(groups, label) -> display rows     exchange_label('binance') -> 'binance (lower bound)'
    side_style(value) -> CSS for Styler.map on a Side column
    plain_md(text) -> venue text escaped for st.markdown / captions / titles (data, never markup)
    plain_html(text) -> venue text escaped for HTML (Plotly titles, the chart's HTML export)
`t` may be epoch milliseconds (int), a datetime (naive = UTC) or a pandas Timestamp.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from common import venues

LONG_COLOR = "#e5484d"  # red: longs liquidated
SHORT_COLOR = "#30a46c"  # green: shorts liquidated
SIDE_COLORS = {"LONG": LONG_COLOR, "SHORT": SHORT_COLOR}
LONG_SHORT_LABEL = "liquidated longs vs shorts (USD)"
MISSING = "–"

Number = Decimal | int | float

# Everything Streamlit's Markdown gives a meaning to: CommonMark punctuation, its own `:color[...]`
# and `:material/...:` directives (the colon), and `$` (LaTeX). A backslash before any ASCII
# punctuation is always a literal in CommonMark, so escaping too much is harmless.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|:<>~$&=\"'])")
# GFM turns bare URLs (http://, https://, www.) and e-mail addresses into links after escapes are
# resolved, so no backslash stops it: an invisible WORD JOINER (U+2060) inside "://", after "www"
# and after "@" does. The reader sees the same text.
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def plain_md(text: object) -> str:
    """Venue text (symbols, refusal messages, errors) as Markdown that shows exactly that text.

    Newlines and other control characters become spaces: a message is one line, never a heading
    or a list. Bare URLs and e-mail addresses stay text, not links (see _AUTOLINK).
    """
    flat = "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in str(text))
    return _MD_SPECIAL.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, flat))


def plain_html(text: object) -> str:
    """Venue text for HTML contexts (Plotly titles and hover text, the HTML export)."""
    return html.escape(str(text), quote=True)


def _dec(x: Number) -> Decimal:
    # Floats go through str() so 0.1 prints as 0.1, not its binary expansion.
    return x if isinstance(x, Decimal) else Decimal(str(x))


def _is_missing(x: object) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and x != x:  # NaN
        return True
    return isinstance(x, Decimal) and not x.is_finite()


def fmt_usd(x: Number | None) -> str:
    """$1,234,567.89 (negative: -$12.00)."""
    if _is_missing(x):
        return MISSING
    assert x is not None
    d = _dec(x).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if d < 0 else ""
    return f"{sign}${abs(d):,.2f}"


def fmt_qty(x: Number | None) -> str:
    """Base-asset quantity with 4 decimals and thousands separators."""
    if _is_missing(x):
        return MISSING
    assert x is not None
    return f"{_dec(x).quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP):,.4f}"


def fmt_pct(x: Number | None) -> str:
    """A percentage already scaled to 0..100, with 1 decimal."""
    if _is_missing(x):
        return MISSING
    assert x is not None
    return f"{_dec(x).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP):,.1f}%"


def fmt_count(n: int | None) -> str:
    return MISSING if n is None else f"{int(n):,}"


def share_pct(part: Number, total: Number) -> Decimal | None:
    """part / total * 100, or None when the total is zero."""
    t = _dec(total)
    if t == 0:
        return None
    return _dec(part) / t * 100


def to_utc(t: int | datetime) -> datetime:
    """Epoch ms or a datetime (naive means UTC) as an aware UTC datetime."""
    if isinstance(t, datetime):
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return datetime.fromtimestamp(int(t) / 1000, tz=UTC)


def fmt_date(t: int | datetime | None) -> str:
    return MISSING if t is None else to_utc(t).strftime("%Y%m%d")


def fmt_time(t: int | datetime | None) -> str:
    return MISSING if t is None else to_utc(t).strftime("%H:%M:%S")


def fmt_datetime(t: int | datetime | None) -> str:
    return MISSING if t is None else to_utc(t).strftime("%Y%m%d %H:%M:%S UTC")


def fmt_duration(seconds: float | None) -> str:
    """'3d 04:05:06', or '04:05:06' under a day."""
    if seconds is None:
        return MISSING
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def fmt_age(seconds: float | None) -> str:
    """How long ago, for health panels: '0.4 s ago', '5 min ago', 'never'."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class _AggLike(Protocol):
    events: int
    quantity: Decimal
    usd: Decimal


def agg_table(
    groups: Mapping[str, _AggLike], label: str, order: Sequence[str] = (), mixed_assets: bool = False
) -> list[dict[str, str]]:
    """Rows for a breakdown table: count, base quantity, USD and share of USD, as display strings.

    `mixed_assets` (symbol ALL) shows no base quantity: BTC and ETH amounts do not add up.
    """
    total_usd = sum((g.usd for g in groups.values()), Decimal(0))
    names = [n for n in order if n in groups] + sorted(n for n in groups if n not in order)
    return [
        {
            label: name,
            "Events": fmt_count(groups[name].events),
            "Base quantity": "n/a (mixed assets)" if mixed_assets else fmt_qty(groups[name].quantity),
            "USD": fmt_usd(groups[name].usd),
            "Share of USD": fmt_pct(share_pct(groups[name].usd, total_usd)),
        }
        for name in names
    ]


def side_style(value: object) -> str:
    """CSS for a table cell holding a side: LONG red, SHORT green (pandas Styler.map)."""
    colour = SIDE_COLORS.get(str(value))
    return f"color: {colour}; font-weight: 600" if colour else ""


def exchange_label(exchange: str) -> str:
    """A sampled venue's counts are a lower bound; say so wherever its figures appear."""
    return f"{exchange} (lower bound)" if venues.is_sampled(exchange) else exchange


def lower_bound(exchanges: Iterable[str]) -> str:
    """The caption for figures that include sampled venues (which ones, and how each samples)."""
    return venues.lower_bound_note(list(exchanges))


def with_lower_bound(text: str, exchanges: Iterable[str]) -> str:
    """`text · <lower-bound note>`, or `text` alone when no sampled venue is among `exchanges`."""
    note = lower_bound(exchanges)
    return f"{text} · {note}" if note else text
