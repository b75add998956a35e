"""The text of every alert, in the users' format: YYYYMMDD HH:MM:SS UTC, LONG/SHORT, USD and base
amounts, venues, risk, and a link to the app's view (LIQ_APP_PUBLIC_URL + /explorer or /cascades).
Plain text (no Markdown): venue symbols never need escaping."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from common.events import display_date, display_time
from common.instruments import guess_instrument
from common.venues import label


def when(ms: int) -> str:
    """20261202 01:50:12 UTC"""
    return f"{display_date(ms)} {display_time(ms)} UTC"


def usd(x: Decimal) -> str:
    """$1,234,567.89"""
    return f"${x.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"


def qty(x: Decimal) -> str:
    """12,345.6789 (4 decimals)"""
    return f"{x.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP):,.4f}"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def link(base: str, page: str, **params: str) -> str:
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{base}/{page}" + (f"?{query}" if query else "")


def app_symbol(canonical_or_symbol: str) -> str:
    """The app's `symbol` parameter for a canonical perpetual (BTC-USDT-PERP -> BTCUSDT); else itself."""
    parts = canonical_or_symbol.split("-")
    if len(parts) == 3 and parts[2] == "PERP":
        return f"{parts[0]}{parts[1]}"
    return canonical_or_symbol


def liquidation(rule: str, d: dict[str, Any], base_url: str, min_usd: Decimal) -> str:
    inst = guess_instrument(d["exchange"], d["symbol"])
    quantity = inst.canonical_quantity(Decimal(d["quantity"]))
    price = Decimal(d["price"])
    value = Decimal(d["value_usd"])
    sampled = " (sampled feed)" if d.get("sampled") else ""
    return "\n".join(
        (
            f"LIQUIDATION {d['side']} {inst.base} {usd(value)}",
            when(int(d["time_ms"])),
            f"{label(d['exchange'])} {d['symbol']}: {qty(quantity)} {inst.base} at {usd(inst.base_price(price))}{sampled}",
            f"rule {rule} | source {d.get('source', '')}",
            link(
                base_url,
                "explorer",
                symbol=d["symbol"],
                exchanges=d["exchange"],
                side=d["side"],
                min_usd=str(int(min_usd)),
            ),
        )
    )


def _venues(d: dict[str, Any]) -> str:
    shares = d.get("usd_by_exchange") or {}
    names = d.get("exchanges") or sorted(shares)
    parts = [f"{label(v)} {usd(Decimal(shares[v]))}" if v in shares else label(v) for v in names]
    cross = " (cross-venue)" if d.get("cross_exchange") else ""
    return "venues: " + ", ".join(parts) + cross


def cascade_start(rule: str, d: dict[str, Any], base_url: str) -> str:
    base = str(d["symbol"]).split("-", 1)[0]
    return "\n".join(
        (
            f"CASCADE STARTED {d['side']} {d['symbol']}",
            f"since {when(int(d['start_ms']))}",
            f"{usd(Decimal(d['value_usd']))} ({qty(Decimal(d['quantity']))} {base}), {d['events']} liquidations so far",
            _venues(d),
            f"risk {d.get('risk_score', 0)}/100",
            f"rule {rule} | source {d.get('source', '')}",
            link(base_url, "cascades", symbol=app_symbol(d["symbol"]), cascade=str(d["id"])),
        )
    )


def cascade_end(rule: str, d: dict[str, Any], base_url: str) -> str:
    base = str(d["symbol"]).split("-", 1)[0]
    start, end = int(d["start_ms"]), int(d["end_ms"])
    return "\n".join(
        (
            f"CASCADE ENDED {d['side']} {d['symbol']}",
            f"{when(start)} to {display_time(end)} UTC ({duration((end - start) / 1000)})",
            f"total {usd(Decimal(d['value_usd']))} ({qty(Decimal(d['quantity']))} {base}), {d['events']} liquidations",
            _venues(d),
            f"risk {d.get('risk_score', 0)}/100",
            f"rule {rule} | source {d.get('source', '')}",
            link(base_url, "cascades", symbol=app_symbol(d["symbol"]), cascade=str(d["id"])),
        )
    )


def volume(
    rule: str,
    scope: str,
    symbol: str,
    side: str,
    total: Decimal,
    minutes: float,
    at_ms: int,
    venues: list[str],
    base_url: str,
    events: int,
) -> str:
    what = "the market" if scope == "market" else scope
    sides = "LONG+SHORT" if side == "ALL" else side
    return "\n".join(
        (
            f"VOLUME {sides} {what}: {usd(total)} liquidated in {minutes:g} min",
            f"{events} liquidations, as of {when(at_ms)}",
            "venues: " + ", ".join(label(v) for v in venues),
            f"rule {rule}",
            link(base_url, "explorer", symbol=symbol, side="" if side == "ALL" else side),
        )
    )


def stream_down(rule: str, venue: str, reason: str, since_ms: int, minutes: float) -> str:
    return "\n".join(
        (
            f"STREAM DOWN {label(venue)}: {reason}",
            f"since {when(since_ms)} (more than {minutes:g} min)",
            f"rule {rule}",
        )
    )


def stream_up(rule: str, venue: str, at_ms: int) -> str:
    return "\n".join((f"STREAM RECOVERED {label(venue)}", f"at {when(at_ms)}", f"rule {rule}"))
