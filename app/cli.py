"""The command line on the app's data functions: `python -m app.cli COMMAND [options]`.

    market  [--hours 1|4|12|24 --min-usd X]     the market overview: every venue and coin
    snapshot                      the live 60-minute view from Redis
    totals  [--since D --until D | --hours N]   accumulated totals from TimescaleDB
    chart   --hours N --out FILE.html           the TradingView-style chart as a standalone page
    export  --out FILE.csv|FILE.parquet [filters]   every selected liquidation, streamed

Every command takes --target (ALL, a coin like BTC, or exchange:contract like binance:BTCUSDT; the
old --symbol BTCUSDT means that symbol on every venue, as before), --exchanges, --side,
--include-nonlive, --min-usd and --json. They make the same `Query` (app/query.py) the app's URL
makes, through the same parser, and the commands call the same data functions with it: the same
"now", "whole history" (from the first matching event) and non-live rule as every page. Dates
are YYYYMMDD (UTC days, --until inclusive), times HH:MM:SS UTC. Exit codes: 0 done, 1 a service
is unreachable, 2 bad arguments or configuration (with a message saying which).
It reads the same settings as the app (environment, then .env) and calls the same data functions,
without Streamlit's caching.

The text layout is the users' old tools': every breakdown line reads
`LONG: 15 events | 5.2340 BTC | $560,842.00 | 63.5%` (per side, then per exchange under its name,
`binance (lower bound): ...` for sampled venues, with the lower-bound note below). The amount is in
the symbol's coin, the canonical base (`1000PEPEUSDT` reads PEPE: amounts x 1000); ALL, the whole
market, shows USD only, since amounts of different coins do not add up. `snapshot` then lists the
latest 10 liquidations as a table and the few cascades that matter (at most 5: the active ones, then
the largest by USD; `... and N smaller cascades`); `totals` gives the data collection period (first
and last liquidation of the selection) and the average rates per hour over it. `--json` carries the
same figures (`unit`, `base_amount`, `latest`, `top_cascades`, `period`, `rates_per_hour`), exact.

A new command is a subparser in `_parser()` (with the `common` / `ranged` option parents) plus a
`_COMMANDS` entry taking (args, settings, query).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from app.data.history import Agg, Breakdown
    from app.query import Query
    from common.config import Settings
    from common.events import Cascade

MAX_HOURS = 10 * 8760
HOUR_MS = 3_600_000


class UsageError(ValueError):
    """A bad argument; the message says which and what is expected."""


# ---------------------------------------------------------------- arguments


def _day(text: str) -> date:
    if not re.fullmatch(r"\d{8}", text):
        raise argparse.ArgumentTypeError(f"expected a date as YYYYMMDD, got {text[:40]!r}")
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a real date") from None


def _hours(text: str) -> int:
    if not re.fullmatch(r"\d{1,6}", text) or not 1 <= int(text) <= MAX_HOURS:
        raise argparse.ArgumentTypeError(f"expected whole hours from 1 to {MAX_HOURS}, got {text[:40]!r}")
    return int(text)


def _symbol(text: str) -> str:
    from common.symbols import valid_symbol

    value = text.strip().upper()
    if value != "ALL" and not valid_symbol(value):
        raise argparse.ArgumentTypeError(f"expected a symbol like BTCUSDT, 币安人生USDT or ALL, got {text[:40]!r}")
    return value


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"expected a USD amount, got {text[:40]!r}") from None
    if not value.is_finite() or value < 0 or value > 10**12:
        raise argparse.ArgumentTypeError(f"expected a USD amount from 0 to 1e12, got {text[:40]!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", help="ALL, a coin (BTC) or exchange:contract (binance:BTCUSDT)")
    common.add_argument("--symbol", type=_symbol, help="old spelling: a venue symbol on every venue, or ALL")
    common.add_argument("--exchanges", help="comma list, e.g. binance,bybit (default: all configured)")
    common.add_argument("--side", choices=("LONG", "SHORT"), type=str.upper, help="one side only")
    common.add_argument("--include-nonlive", action="store_true", help="also count replay/test data")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    ranged = argparse.ArgumentParser(add_help=False)
    ranged.add_argument("--since", type=_day, help="first UTC day, YYYYMMDD")
    ranged.add_argument("--until", type=_day, help="last UTC day (inclusive), YYYYMMDD")
    ranged.add_argument("--hours", type=_hours, help="the last N hours (instead of --since/--until)")

    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__.split("\n\n")[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True)
    market = sub.add_parser("market", parents=[common], help="every venue and coin over 1, 4, 12 or 24 h")
    market.add_argument("--hours", type=int, choices=(1, 4, 12, 24), default=24, help="the window (default 24)")
    market.add_argument("--min-usd", type=_usd, default=Decimal(10_000), help="the feed's threshold (default 10000)")
    snapshot = sub.add_parser("snapshot", parents=[common], help="the live 60-minute view from Redis")
    snapshot.add_argument("--min-usd", type=_usd, default=Decimal(0), help="latest rows and cascades of at least")
    sub.add_parser("totals", parents=[common, ranged], help="accumulated totals (default: whole history)")
    chart = sub.add_parser("chart", parents=[common], help="write the TradingView-style chart as HTML")
    chart.add_argument("--hours", type=_hours, required=True, help="the last N hours")
    chart.add_argument("--out", type=Path, required=True, help="FILE.html")
    chart.add_argument(
        "--min-usd", type=_usd, default=Decimal(0), help="markers of at least (and the institutional size)"
    )
    export = sub.add_parser("export", parents=[common, ranged], help="stream liquidations to CSV or Parquet")
    export.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    export.add_argument("--min-usd", type=_usd, default=Decimal(0))
    export.add_argument("--cascade-only", action="store_true")
    return parser


def _query(args: argparse.Namespace, settings: Settings, need_db: bool) -> Query:
    """The command's Query, through the app's one parser (app.query.parse_query); a refused value
    is a usage error here, not a warning."""
    from app.data.catalog import load_catalog
    from app.data.connections import DataUnavailable, open_pool
    from app.query import parse_query

    if getattr(args, "hours", None) is not None and (getattr(args, "since", None) or getattr(args, "until", None)):
        raise UsageError("give either --hours or --since/--until, not both")
    if getattr(args, "until", None) and not getattr(args, "since", None):
        raise UsageError("--until needs --since")
    if args.exchanges is not None:
        items = [e.strip().lower() for e in args.exchanges.split(",") if e.strip()]
        bad = [e for e in items if e not in settings.exchanges]
        if bad or not items:
            raise UsageError(
                f"--exchanges: unknown {', '.join(bad) or 'empty list'}; configured: {','.join(settings.exchanges)}"
            )
    params = {
        "target": args.target or "",
        "symbol": args.symbol or "",
        "exchanges": args.exchanges or "",
        "side": args.side or "",
        "nonlive": "1" if args.include_nonlive else "",
        "min_usd": f"{args.min_usd:f}" if getattr(args, "min_usd", None) and args.command != "market" else "",
    }
    if getattr(args, "since", None):
        params["since"] = f"{args.since:%Y%m%d}"
    if getattr(args, "until", None):
        params["until"] = f"{args.until:%Y%m%d}"
    if args.command != "market" and getattr(args, "hours", None) is not None:
        params["hours"] = str(args.hours)
    configured = [(e, sym) for e in settings.exchanges for sym in settings.configured_symbols]
    if args.target or args.symbol:
        try:
            pool = open_pool(str(settings.app_database_url))
        except DataUnavailable:
            if need_db:
                raise
            catalog = load_catalog(None, configured)  # the live view works without the database
        else:
            try:
                catalog = load_catalog(pool, configured)
            finally:
                pool.close()
    else:
        catalog = load_catalog(None, configured)
    q, warnings = parse_query(params, catalog, settings.exchanges, default_symbol=settings.default_symbol)
    if warnings:
        raise UsageError(" ".join(warnings))
    return q


def _label(q: Query) -> str:
    """The target as the users' tools named it: `BTCUSDT`, `BTC` (a coin), `binance:BTCUSDT`, `ALL`."""
    return _one_line(q.target.param)


# ---------------------------------------------------------------- output


LATEST = 10  # rows of the snapshot's table of latest liquidations
TOP_CASCADES = 5  # cascades the snapshot lists at most (the largest by USD, active ones first)


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Unit:
    """The base unit a single-symbol view reads in: the coin (`BTC`; `PEPE` for `1000PEPEUSDT`,
    whose amounts are multiplied by 1000). The whole market (ALL) has none: coins do not add up."""

    name: str
    multiplier: Decimal = Decimal(1)

    def amount(self, quantity: Decimal) -> Decimal:
        """A stored quantity (the venue's base units) in the canonical base."""
        return quantity * self.multiplier


def _unit(q: Query) -> Unit | None:
    """The query's coin: its totals are already in the canonical base (app.data.history.totals,
    app.data.live.snapshot convert each contract), so no multiplier is left to apply."""
    return None if q.unit is None else Unit(_one_line(q.unit))


def _row_amount(exchange: str, symbol: str, quantity: Decimal) -> tuple[Decimal, str]:
    """One liquidation's amount in its own canonical base, and that base's name."""
    from common.instruments import guess_instrument

    inst = guess_instrument(exchange, symbol)
    return inst.canonical_quantity(quantity), _one_line(inst.base)


def _span(ms: int) -> str:
    """A duration as the users' tools wrote it: `24d 23h 59m`, `6h 30m`, `12m 5s`, `40s`."""
    seconds = max(0, ms) // 1000
    d, rest = divmod(seconds, 86_400)
    h, rest = divmod(rest, 3_600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s}s" if m else f"{s}s"


def _events(n: int) -> str:
    from app.format import fmt_count

    return f"{fmt_count(n)} events"  # "1 events" too: the users' scripts read `N events` (as `market` prints)


def _agg_text(a: Agg, total_usd: Decimal, unit: Unit | None) -> str:
    """`15 events | 5.2340 BTC | $560,842.00 | 63.5%` (no base amount for ALL)."""
    from app.format import fmt_pct, fmt_qty, fmt_usd, share_pct

    parts = [_events(a.events)]
    if unit is not None:
        parts.append(f"{fmt_qty(unit.amount(a.quantity))} {unit.name}")
    parts += [fmt_usd(a.usd), fmt_pct(share_pct(a.usd, total_usd))]
    return " | ".join(parts)


def _agg_json(a: Agg, total: Decimal, unit: Unit | None) -> dict[str, Any]:
    share = a.usd / total * 100 if total else None
    out: dict[str, Any] = {
        "events": a.events,
        "usd": f"{a.usd:f}",
        "share_pct": None if share is None else f"{share:.1f}",
    }
    if unit is not None:  # the whole market has no base amount: coins do not add up
        out["quantity"] = f"{a.quantity:f}"  # the data layer's sum, already in the coin (1000PEPE counts 1000 PEPE)
        out["base_amount"] = f"{unit.amount(a.quantity):f}"  # in `unit` (PEPE)
    return out


def _breakdown_json(b: Breakdown, unit: Unit | None, exchanges: Sequence[str]) -> dict[str, Any]:
    from app.data.history import Agg
    from app.format import lower_bound

    total = b.total.usd
    return {
        "unit": None if unit is None else unit.name,
        "total": _agg_json(b.total, total, unit),
        "by_side": {s: _agg_json(b.by_side.get(s, Agg()), total, unit) for s in ("LONG", "SHORT")},
        "by_exchange": {e: _agg_json(a, total, unit) for e, a in sorted(b.by_exchange.items())},
        "largest_usd": None if b.max_usd is None else f"{b.max_usd:f}",
        "lower_bound_note": lower_bound(exchanges),
    }


def _breakdown_lines(name: str, b: Breakdown, exchanges: Sequence[str], unit: Unit | None) -> list[str]:
    """The symbol's (or ALL's) line, then per side and per exchange; shares are of the selection's USD."""
    from app.data.history import Agg
    from app.format import LONG_SHORT_LABEL, exchange_label, fmt_usd, lower_bound

    total = b.total.usd
    lines = [f"  {_one_line(name)}: {_agg_text(b.total, total, unit)}", f"  {LONG_SHORT_LABEL}:"]
    for side in ("LONG", "SHORT"):
        lines.append(f"    {side}: {_agg_text(b.by_side.get(side, Agg()), total, unit)}")
    lines.append("  by exchange:")
    for exchange in exchanges:
        lines.append(f"    {exchange_label(exchange)}: {_agg_text(b.by_exchange.get(exchange, Agg()), total, unit)}")
    if b.max_usd is not None:
        lines.append(f"  largest liquidation: {fmt_usd(b.max_usd)}")
    if lower_bound(exchanges):
        lines.append(f"  note: {lower_bound(exchanges)}")
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Columns padded to their widest cell and joined by ` | ` (numbers right-aligned)."""
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    out = []
    for row in (header, *rows):
        cells = [
            c.rjust(w) if r and row is not header else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ]
        out.append(" | ".join(cells).rstrip())
    return out


def _emit(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print("\n".join(lines))


# ---------------------------------------------------------------- commands


_COLLECTOR_KEYS = (
    "database",
    "database_error",
    "spool",
    "queue",
    "queue_max",
    "behind_s",
    "backpressure",
    "backpressure_s",
    "quarantined_rows",
    "quarantine_file",
    "last_quarantine_reason",
    "invalid_events",
)


def _one_line(text: object) -> str:
    """Venue or error text for the terminal: control characters (newlines, escapes) become spaces."""
    return "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in str(text))


def _health_json(
    collector: dict[str, Any] | None, health: dict[str, dict[str, Any]], exchanges: Sequence[str]
) -> dict[str, Any]:
    streams = {}
    for exchange in exchanges:
        h = health.get(exchange) or {}
        streams[exchange] = {
            "connected": bool(h.get("connected")),
            "reconnects": h.get("reconnects", 0),
            "last_error": h.get("last_error") or "",
            "drops": h.get("drops") or {},
        }
    state = collector or {}
    out = {"collector": {k: state[k] for k in _COLLECTOR_KEYS if k in state}, "streams": streams}
    from app.data.live import venue_instruments

    venues = venue_instruments(collector, health, exchanges)
    if venues:
        out["instruments"] = {v.exchange: v.json() for v in venues}
    return out


def _instrument_lines(venues: dict[str, dict[str, Any]]) -> list[str]:
    """Per venue: a PROBLEM / WARNING line when the list is missing or stored, then the counts."""
    from app.data.live import SHOWN_ITEMS

    def named(items: list[str]) -> str:
        more = len(items) - SHOWN_ITEMS
        return ", ".join(_one_line(i) for i in items[:SHOWN_ITEMS]) + (f" and {more} more" if more > 0 else "")

    lines = []
    for exchange, v in venues.items():
        name = _one_line(exchange)
        error = f" (last REST error: {_one_line(v['error'])})" if v.get("error") else ""
        if v.get("problem"):
            lines.append(f"  PROBLEM: instruments {name}: {v['problem']}{error}")
        elif v.get("warning"):
            lines.append(f"  WARNING: instruments {name}: {v['warning']}{error}")
        parts = []
        if v.get("tracked") is not None:
            parts.append(f"{v['tracked']} tracked")
        if v.get("instruments") is not None:
            parts.append(f"{v['instruments']} listed")
        if v.get("candles") is not None:
            parts.append(f"candles {v['candles']}")
        if "source" in v:
            refreshed = v.get("last_refresh") or "never"
            parts.append(f"list from {_one_line(v['source'])}, last refresh {refreshed}")
        if v.get("connections") is not None:
            parts.append(f"connections {v['connections']}")
        if v.get("topics") is not None:
            parts.append(f"topics {v['topics']}")
        if "refused_topics" in v:
            refused = v["refused_topics"]
            parts.append(
                f"refused {len(refused)}"
                + (f" ({named([f'{t}: {r}' for t, r in refused.items()])})" if refused else "")
            )
        if "unlisted" in v:
            unlisted = v["unlisted"]
            parts.append(f"missing {len(unlisted)}" + (f" ({named(unlisted)})" if unlisted else ""))
        if v.get("skipped"):
            parts.append("skipped " + ", ".join(f"{_one_line(k)}: {n}" for k, n in v["skipped"].items()))
        lines.append(f"  instruments {name}: {'; '.join(parts)}")
    return lines


def _health_lines(health: dict[str, Any]) -> list[str]:
    c = health["collector"]
    parts = []
    if "database" in c:
        error = f" ({_one_line(c['database_error'])})" if c.get("database_error") else ""
        parts.append(f"TimescaleDB {_one_line(c['database'])}{error}")
    spool = c.get("spool")
    if isinstance(spool, dict):
        text = f"spool {_one_line(spool.get('state', '?'))}, {spool.get('pending_events', 0)} events"
        if spool.get("error"):
            text += f" (error: {_one_line(spool['error'])})"
        parts.append(text)
    behind = c.get("behind_s")
    if isinstance(behind, (int, float)):
        from common.live_view import BEHIND_WARN_S

        word = "BEHIND" if behind >= BEHIND_WARN_S else "behind"  # upper case like DISCONNECTED: look here
        parts.append(f"{word} {behind:g} s, queue {_one_line(c.get('queue', '?'))}")
    if "backpressure" in c:
        parts.append(f"backpressure {'yes' if c['backpressure'] else 'no'}")
    if "quarantined_rows" in c:
        reason = c.get("last_quarantine_reason")
        parts.append(f"quarantined rows {c['quarantined_rows']}" + (f" (last: {_one_line(reason)})" if reason else ""))
    if "invalid_events" in c:
        parts.append(f"invalid events {c['invalid_events']}")
    lines = [f"  storage: {'; '.join(parts)}"] if parts else []
    for exchange, h in health["streams"].items():
        drops = h["drops"]
        text = f"  stream {_one_line(exchange)}: {'connected' if h['connected'] else 'DISCONNECTED'}"
        text += f", reconnects {h['reconnects']}, drops {sum(drops.values())}"
        if drops:
            text += " (" + ", ".join(f"{_one_line(k)}: {v}" for k, v in drops.items()) + ")"
        if h["last_error"]:
            text += f", last error: {_one_line(h['last_error'])}"
        lines.append(text)
    return lines + _instrument_lines(health.get("instruments") or {})


def _latest_json(events: pd.DataFrame, unit: Unit | None) -> list[dict[str, Any]]:
    """The newest LATEST rows of the window: date, time, venue, side, amount in the coin, USD."""
    from app.format import fmt_date, fmt_time

    out = []
    for r in events.head(LATEST).to_dict("records"):
        at = int(r["time_ms"])
        row: dict[str, Any] = {
            "time_ms": at,
            "date": fmt_date(at),
            "time": fmt_time(at),
            "exchange": r["exchange"],
            "symbol": r["symbol"],
            "side": str(r["side"]),
            "usd": f"{r['value_usd']:f}",
            "source": r["source"],
        }
        if unit is not None:
            amount, base = _row_amount(r["exchange"], r["symbol"], r["quantity"])
            row.update(base_amount=f"{amount:f}", unit=base)
        out.append(row)
    return out


def _latest_lines(rows: list[dict[str, Any]], unit: Unit | None, complete: bool) -> list[str]:
    from app.data.live import MAX_SCAN
    from app.format import fmt_count, fmt_qty, fmt_usd

    if not rows:
        return ["  latest liquidations: none in the last 60 minutes"]
    title = "  latest liquidation" if len(rows) == 1 else f"  latest {len(rows)} liquidations (newest first)"
    if not complete:  # a rare selection: the scan stopped before finding LATEST rows
        title += f" (only the newest {fmt_count(MAX_SCAN)} of the window were searched)"
    header = ["Date", "Time (UTC)", "Exchange", *([] if unit else ["Symbol"]), "Side"]
    header += [*([f"Amount ({unit.name})"] if unit else []), "USD Value"]
    right = [False] * (len(header) - (2 if unit else 1)) + [True] * (2 if unit else 1)
    cells = []
    for r in rows:
        row = [r["date"], r["time"], _one_line(r["exchange"]), *([] if unit else [_one_line(r["symbol"])]), r["side"]]
        row += [*([fmt_qty(Decimal(r["base_amount"]))] if unit else []), fmt_usd(Decimal(r["usd"]))]
        cells.append(row)
    return [title + ":", *(f"    {line}" for line in _table(header, cells, right))]


def _top_cascades(cascades: Sequence[Cascade]) -> tuple[list[Cascade], str]:
    """The few cascades that matter: the active ones, then the largest by USD, TOP_CASCADES at most;
    and the line that counts the others ('' when none is left out). They are "smaller" when the
    cut only dropped ended cascades below the ones shown, "more" otherwise (too many active)."""
    ranked = sorted(cascades, key=lambda c: (not c.active, -c.value_usd, -c.end_ms, c.id))
    shown, rest = ranked[:TOP_CASCADES], ranked[TOP_CASCADES:]
    if not rest:
        return shown, ""
    active = sum(1 for c in rest if c.active)
    noun = "cascade" if len(rest) == 1 else "cascades"
    if not active and any(not c.active for c in shown):
        return shown, f"... and {len(rest)} smaller {noun}"
    return shown, f"... and {len(rest)} more {noun}" + (f" ({active} still active)" if active else "")


def _cascade_json(c: Cascade, unit: Unit | None) -> dict[str, Any]:
    out = {
        "id": c.id,
        "symbol": c.symbol,
        "side": str(c.side),
        "start": _stamp(c.start_ms),
        "end": _stamp(c.end_ms),
        "events": c.count,
        "usd": f"{c.value_usd:f}",
        "active": c.active,
        "exchanges": list(c.exchanges),
    }
    if unit is not None:  # a cascade's quantity is already in the canonical base (collector/cascades.py)
        out.update(base_amount=f"{c.quantity:f}", unit=unit.name)
    return out


def _cascade_line(c: Cascade, unit: Unit | None) -> str:
    from app.format import fmt_qty, fmt_usd

    start, end = _stamp(c.start_ms), _stamp(c.end_ms)
    until = end[9:] if end[:8] == start[:8] else end
    parts = [_events(c.count), *([f"{fmt_qty(c.quantity)} {unit.name}"] if unit else []), fmt_usd(c.value_usd)]
    parts.append(", ".join(_one_line(e) for e in c.exchanges))
    state = "still active" if c.active else "ended"
    return f"    {c.side} {_one_line(c.symbol)} · {start[:-4]} -> {until} · {state}: {' | '.join(parts)}"


def _cascade_lines(cascades: Sequence[Cascade], unit: Unit | None) -> list[str]:
    if not cascades:
        return ["  cascades: none in the last 60 minutes"]
    shown, omitted = _top_cascades(cascades)
    lines = [f"  cascades ({len(cascades)} in the window; the largest by USD, active ones first):"]
    lines += [_cascade_line(c, unit) for c in shown]
    return lines + ([f"    {omitted}"] if omitted else [])


def _snapshot(args: argparse.Namespace, settings: Settings, q: Query) -> None:
    from app.data.connections import open_redis
    from app.data.live import snapshot
    from app.query import now_ms
    from common.live_view import COLLECTOR_STALE_MS, WINDOW_MS, Keys

    keys = Keys(settings.redis_prefix)
    client = open_redis(str(settings.redis_url), settings.redis_timeout_s)
    try:
        snap = snapshot(client, keys, q, now_ms(), latest=LATEST)
        cascades = list(snap.cascades)  # matched on canonical names by the data module
    finally:
        client.close()
    exchanges = q.venues
    unit = _unit(q)
    age = snap.collector_age_ms
    collector = "not running" if age is None or age > COLLECTOR_STALE_MS else "running"
    nonlive = sorted(s for s in snap.sources if s != "live")
    start = snap.now_ms - WINDOW_MS
    health = _health_json(snap.collector, snap.health, exchanges)
    latest = _latest_json(snap.events, unit)
    top, _omitted = _top_cascades(cascades)
    data = {
        "command": "snapshot",
        "symbol": q.target.param,
        "target": q.target.param,
        "exchanges": list(exchanges),
        "window_start": _stamp(start),
        "window_end": _stamp(snap.now_ms),
        "collector": collector,
        "sources": sorted(snap.sources),
        "health": health,
        "latest": latest,
        "latest_complete": snap.latest_complete,
        "cascades": [_cascade_json(c, unit) for c in cascades],
        "top_cascades": [_cascade_json(c, unit) for c in top],
        "cascades_omitted": len(cascades) - len(top),
        **_breakdown_json(snap.totals, unit, exchanges),
    }
    lines = [f"{_label(q)} · last 60 minutes · {_stamp(start)} .. {_stamp(snap.now_ms)} · collector {collector}"]
    if nonlive:
        lines.append(f"  WARNING: includes {', '.join(_one_line(n.upper()) for n in nonlive)} data — not live")
    lines += _breakdown_lines(_label(q), snap.totals, exchanges, unit)
    lines += _latest_lines(latest, unit, snap.latest_complete)
    lines += _cascade_lines(cascades, unit)
    lines += _health_lines(health)
    _emit(args, data, lines)


@dataclass(frozen=True)
class Period:
    """The data collection period of a selection: its first and last liquidation (ms), and the
    average rates per hour over that span (exact; None when both are the same instant)."""

    first: int
    last: int
    events_h: Decimal | None
    usd_h: Decimal | None
    base_h: Decimal | None  # None for ALL: coins do not add up


def _period(first: int | None, last: int | None, b: Breakdown, unit: Unit | None) -> Period | None:
    if first is None or last is None or not b.total.events:
        return None
    if last <= first:
        return Period(first, last, None, None, None)
    hours = Decimal(last - first) / HOUR_MS
    base = None if unit is None else unit.amount(b.total.quantity) / hours
    return Period(first, last, b.total.events / hours, b.total.usd / hours, base)


def _quantized(x: Decimal, places: str) -> str:
    return f"{x.quantize(Decimal(places), rounding=ROUND_HALF_UP):f}"


def _period_json(p: Period | None) -> dict[str, Any]:
    if p is None:
        return {"period": None, "rates_per_hour": None}
    period = {
        "first": _stamp(p.first),
        "last": _stamp(p.last),
        "first_ms": p.first,
        "last_ms": p.last,
        "duration": _span(p.last - p.first),
        "duration_s": (p.last - p.first) // 1000,
    }
    if p.events_h is None or p.usd_h is None:
        return {"period": period, "rates_per_hour": None}
    rates = {"events": _quantized(p.events_h, "0.0001"), "usd": _quantized(p.usd_h, "0.01")}
    if p.base_h is not None:
        rates["base_amount"] = _quantized(p.base_h, "0.00000001")
    return {"period": period, "rates_per_hour": rates}


def _period_lines(p: Period | None, unit: Unit | None) -> tuple[str, str | None]:
    """`Data collection period: A -> B (24d 23h 59m)` and `Average rates: ...` (None without events)."""
    from app.format import fmt_qty, fmt_usd

    if p is None:
        return "  Data collection period: no liquidations in this range", None
    head = f"  Data collection period: {_stamp(p.first)} -> {_stamp(p.last)} ({_span(p.last - p.first)})"
    if p.events_h is None or p.usd_h is None:
        return head, "  Average rates: n/a (one instant of data)"
    parts = [f"{p.events_h.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f} events/h"]
    if unit is not None and p.base_h is not None:
        parts.append(f"{fmt_qty(p.base_h)} {unit.name}/h")
    parts.append(f"{fmt_usd(p.usd_h)}/h")
    return head, f"  Average rates: {' | '.join(parts)}"


def _totals(args: argparse.Namespace, settings: Settings, q: Query) -> None:
    from app.data.connections import open_pool
    from app.data.history import coverage, totals
    from app.data.rows import event_bounds
    from app.format import fmt_pct
    from app.query import now_ms

    pool = open_pool(str(settings.app_database_url))
    try:
        first, last = event_bounds(pool, q) if q.whole_history else (None, None)
        start, end = q.time_range(now_ms(), first)
        label = "whole history" if q.whole_history else q.range_label()
        b = totals(pool, q, start, end)
        inside = first is not None and last is not None and start <= first and last < end
        if b.total.events and not inside:  # the first and last liquidation of the range
            first, last = event_bounds(pool, q, start, end)
        cov = coverage(pool, q, start, end)
    finally:
        pool.close()
    exchanges = q.venues
    unit = _unit(q)
    period = _period(first, last, b, unit)
    data = {
        "command": "totals",
        "symbol": q.target.param,
        "target": q.target.param,
        "exchanges": list(exchanges),
        "start": _stamp(start),
        "end": _stamp(end),
        "include_nonlive": args.include_nonlive,
        "connected_pct": {e: f"{p:.1f}" for e, p in sorted(cov.pct_by_exchange.items())},
        **_period_json(period),
        **_breakdown_json(b, unit, exchanges),
    }
    period_line, rates_line = _period_lines(period, unit)
    lines = [f"{_label(q)} · {label} · {_stamp(start)} .. {_stamp(end)}"]
    if args.include_nonlive:
        lines.append(f"  WARNING: includes {settings.nonlive_source.upper()} data — not live")
    lines.append(period_line)
    lines += _breakdown_lines(_label(q), b, exchanges, unit)
    if rates_line:
        lines.append(rates_line)
    lines.append(
        "  connected: " + ", ".join(f"{e} {fmt_pct(p)} of the period" for e, p in sorted(cov.pct_by_exchange.items()))
    )
    _emit(args, data, lines)


def _chart(args: argparse.Namespace, settings: Settings, q: Query) -> None:
    import pandas as pd

    from app.charts import chart_html, liquidation_chart
    from app.data.connections import open_pool
    from app.data.history import big_liquidations, candles, coverage, liquidation_bars, marker_limit, price_pair
    from app.query import INTERVAL_MS, auto_interval, now_ms

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out: {args.out.name} must end in .html")
    start, end = q.time_range(now_ms())
    interval = auto_interval(end - start)
    interval_ms = INTERVAL_MS[interval]
    pair = price_pair(q)
    marker_usd = max(settings.institutional_usd, q.min_usd)
    pool = open_pool(str(settings.app_database_url))
    try:
        bars = liquidation_bars(pool, q, start, end, interval_ms)
        prices = (
            candles(pool, pair[0], pair[1], start, end, interval_ms, not q.include_nonlive)
            if pair is not None
            else pd.DataFrame(columns=["bar", "open", "high", "low", "close", "volume"])
        )
        cov = coverage(pool, q, start, end)
        markers = big_liquidations(pool, q, start, end, marker_usd, marker_limit(end - start))
    finally:
        pool.close()
    price_name = f"{pair[1]} ({pair[0]})" if pair is not None else ""
    fig = liquidation_chart(
        prices,
        bars,
        gaps=cov.merged_gaps(min_ms=interval_ms // 2),
        markers=markers,
        title=f"{q.target.label} — {price_name or 'no'} price, liquidations on {', '.join(q.venues)} "
        f"({_stamp(start)} .. {_stamp(end)})",
        price_label=price_name or "Price",
        min_marker_usd=marker_usd,
        x_range=(start, end),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(chart_html(fig), encoding="utf-8")
    usd = sum(bars["value_usd"], Decimal(0)) if not bars.empty else Decimal(0)
    data = {
        "command": "chart",
        "out": str(args.out),
        "symbol": q.target.param,
        "target": q.target.param,
        "start": _stamp(start),
        "end": _stamp(end),
        "interval": interval,
        "bars": int(bars["bar"].nunique()) if not bars.empty else 0,
        "candles": len(prices),
        "usd": f"{usd:f}",
    }
    _emit(
        args,
        data,
        [
            f"wrote {args.out} · {_label(q)} · {_stamp(start)} .. {_stamp(end)} · {interval} bars · ${usd:,.2f} liquidated"
        ],
    )


def _export(args: argparse.Namespace, settings: Settings, q: Query) -> None:
    from app.data import explorer
    from app.data.connections import open_pool
    from app.data.export import export_to_path, format_for_path
    from app.data.rows import first_event_ms
    from app.query import now_ms

    try:
        format_for_path(args.out)
    except ValueError as exc:
        raise UsageError(f"--out: {exc}") from None
    pool = open_pool(str(settings.app_database_url))
    try:
        start, end = q.time_range(now_ms(), first_event_ms(pool, q) if q.whole_history else None)
        described = q.describe(start, end) + ("; cascade members only" if args.cascade_only else "")
        query, params = explorer.explorer_export_query(q, start, end, args.cascade_only)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows = export_to_path(pool, query, params, args.out, filter_description=described)
    finally:
        pool.close()
    data = {"command": "export", "out": str(args.out), "rows": rows, "filter": described}
    _emit(args, data, [f"wrote {rows:,} liquidations to {args.out}", f"filter: {described}"])


def _market(args: argparse.Namespace, settings: Settings, q: Query) -> None:
    """The Market overview page in the terminal (always the whole market and both sides, as on the
    page: --target and --side do not apply; --min-usd is the feed's threshold)."""
    from app.data.connections import open_pool, open_redis
    from app.data.market import market_overview
    from app.market_text import market_json, render_market
    from app.query import now_ms

    pool = open_pool(str(settings.app_database_url))
    client = open_redis(str(settings.redis_url), settings.redis_timeout_s)
    try:
        overview = market_overview(
            pool, client, settings.redis_prefix, args.hours, now_ms(), q.exchanges, q.include_nonlive, args.min_usd
        )
    finally:
        client.close()
        pool.close()
    _emit(args, market_json(overview), render_market(overview))


_COMMANDS = {"market": _market, "snapshot": _snapshot, "totals": _totals, "chart": _chart, "export": _export}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 with a message on bad arguments
    from app.data.connections import DataUnavailable
    from common.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        q = _query(args, settings, need_db=args.command not in ("snapshot", "market"))
        _COMMANDS[args.command](args, settings, q)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DataUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
