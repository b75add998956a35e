"""The market overview for the terminal and as JSON (`python -m app.cli market [--hours N] [--json]`).

`render_market(overview)` gives the users' layout, one line per breakdown:

    ALL · last 1 h · 20261201 12:00:00 UTC .. 20261201 13:00:00 UTC · from redis
    ALL: 24 events | $883,280.00 | 100.0% | previous window $412,000.00 (+114.4%)
    LONG: 15 events | $560,842.00 | 63.5%
    SHORT: 9 events | $322,438.00 | 36.5%
    binance (lower bound): 10 events | $420,000.00 | 47.6%
    BTC: 12 events | $600,000.00 | 67.9% | longs $400,000.00 | shorts $200,000.00 | largest $90,000.00 | +20.0%

No base amount for ALL, per side or per venue: amounts of different coins do not add up.
`market_json(overview)` is the same as plain JSON values (amounts as exact decimal text).
Venue text (symbols) is printed on one line, control characters replaced.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.data.market import CoinRow, MarketOverview
from app.format import (
    LONG_SHORT_LABEL,
    exchange_label,
    fmt_count,
    fmt_datetime,
    fmt_pct,
    fmt_qty,
    fmt_usd,
    lower_bound,
    share_pct,
)


def _one_line(text: object) -> str:
    return "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in str(text))


def change_text(current: Decimal, previous: Decimal) -> str:
    """'+12.3%', '-4.0%', or 'new' when the previous window had nothing."""
    if not previous:
        return "new"
    pct = (current - previous) / previous * 100
    return ("+" if pct >= 0 else "") + fmt_pct(pct)


def _line(name: str, events: int, usd: Decimal, total: Decimal) -> str:
    return f"{name}: {fmt_count(events)} events | {fmt_usd(usd)} | {fmt_pct(share_pct(usd, total))}"


def _coin_line(c: CoinRow, total: Decimal) -> str:
    largest = fmt_usd(c.largest_usd) if c.largest_usd is not None else "n/a"
    return (
        f"{_line(_one_line(c.coin), c.events, c.usd, total)} | longs {fmt_usd(c.long_usd)} | "
        f"shorts {fmt_usd(c.short_usd)} | largest {largest} | {change_text(c.usd, c.previous_usd)}"
    )


def render_market(overview: MarketOverview, coins: int = 20) -> list[str]:
    """Lines for the terminal: header, ALL, each side, each venue, the top `coins` coins, the feed."""
    o = overview
    total = o.usd
    lines = [
        f"ALL · last {o.hours} h · {fmt_datetime(o.start_ms)} .. {fmt_datetime(o.end_ms)} · from {_one_line(o.source)}"
    ]
    if o.include_nonlive:
        lines.append("WARNING: includes non-live (replay/test) data")
    lines.append(
        f"{_line('ALL', o.events, total, total)} | previous window {fmt_usd(o.previous_usd)} "
        f"({change_text(total, o.previous_usd)})"
    )
    lines.append(f"{LONG_SHORT_LABEL}:")
    lines.append(_line("LONG", o.long.events, o.long.usd, total))
    lines.append(_line("SHORT", o.short.events, o.short.usd, total))
    lines.append("by exchange:")
    lines += [_line(exchange_label(v.exchange), v.events, v.usd, total) for v in o.venues]
    lines.append(f"by coin (top {min(coins, len(o.coins))} of {len(o.coins)}):")
    lines += [_coin_line(c, total) for c in o.coins[:coins]]
    lines.append(f"latest liquidations of {fmt_usd(o.feed_min_usd)} or more ({len(o.feed)}):")
    for r in o.feed:
        lines.append(
            f"{fmt_datetime(r.time_ms)} | {_one_line(r.exchange)} | {_one_line(r.symbol)} | {r.side} | "
            f"{fmt_qty(r.quantity)} | {fmt_usd(r.value_usd)}"
        )
    note = lower_bound(v.exchange for v in o.venues if v.events)
    if note:
        lines.append(f"note: {note}")
    return lines


def _dec(x: Decimal | None) -> str | None:
    """Exact decimal text without trailing zeros (Redis and TimescaleDB write the same amount alike)."""
    return None if x is None else f"{x.normalize():f}"


def _share(part: Decimal, total: Decimal) -> str | None:
    share = share_pct(part, total)
    return None if share is None else f"{share:.1f}"


def market_json(overview: MarketOverview) -> dict[str, Any]:
    """The overview as JSON-ready values (exact amounts as decimal text, times as ms and as text)."""
    o = overview
    total = o.usd
    return {
        "command": "market",
        "hours": o.hours,
        "start_ms": o.start_ms,
        "end_ms": o.end_ms,
        "start": fmt_datetime(o.start_ms),
        "end": fmt_datetime(o.end_ms),
        "source": o.source,
        "exchanges": list(o.exchanges),
        "include_nonlive": o.include_nonlive,
        "total": {"events": o.events, "usd": _dec(total), "previous_usd": _dec(o.previous_usd)},
        "change": change_text(total, o.previous_usd),
        "by_side": {
            side: {"events": t.events, "usd": _dec(t.usd), "share_pct": _share(t.usd, total)}
            for side, t in (("LONG", o.long), ("SHORT", o.short))
        },
        "by_exchange": {
            v.exchange: {
                "events": v.events,
                "usd": _dec(v.usd),
                "share_pct": _share(v.usd, total),
                "lower_bound": exchange_label(v.exchange) != v.exchange,
            }
            for v in o.venues
        },
        "coins": [
            {
                "coin": c.coin,
                "events": c.events,
                "long_usd": _dec(c.long_usd),
                "short_usd": _dec(c.short_usd),
                "usd": _dec(c.usd),
                "share_pct": _share(c.usd, total),
                "largest_usd": _dec(c.largest_usd),
                "previous_usd": _dec(c.previous_usd),
                "change": change_text(c.usd, c.previous_usd),
                "symbol": c.symbol,
                "exchange": c.exchange,
                "symbols": list(c.symbols),
            }
            for c in o.coins
        ],
        "feed_min_usd": _dec(o.feed_min_usd),
        "feed": [
            {
                "time_ms": r.time_ms,
                "time": fmt_datetime(r.time_ms),
                "exchange": r.exchange,
                "symbol": r.symbol,
                "side": r.side,
                "quantity": _dec(r.quantity),
                "price": _dec(r.price),
                "usd": _dec(r.value_usd),
            }
            for r in o.feed
        ],
        "feed_complete": o.feed_complete,
        "note": lower_bound(v.exchange for v in o.venues if v.events),
    }
