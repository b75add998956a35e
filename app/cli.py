"""The command line on the app's data functions: `python -m app.cli COMMAND [options]`.

    snapshot                      the live 60-minute view from Redis
    totals  [--since D --until D | --hours N]   accumulated totals from TimescaleDB
    chart   --hours N --out FILE.html           the TradingView-style chart as a standalone page
    export  --out FILE.csv|FILE.parquet [filters]   every selected liquidation, streamed

Every command takes --symbol (BTCUSDT, 币安人生USDT, ..., ALL), --exchanges, --include-nonlive and --json. Dates
are YYYYMMDD (UTC days, --until inclusive), times HH:MM:SS UTC. Exit codes: 0 done, 1 a service
is unreachable, 2 bad arguments or configuration (with a message saying which).
It reads the same settings as the app (environment, then .env) and calls the same data functions,
without Streamlit's caching.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.data.history import Agg, Breakdown
    from common.config import Settings

MAX_HOURS = 10 * 8760


class UsageError(ValueError):
    """A bad argument; the message says which and what is expected."""


def _quiet_streamlit() -> None:
    # The data modules define Streamlit cache wrappers at import; outside `streamlit run` Streamlit
    # logs a warning for each. The CLI never uses those wrappers.
    import streamlit.logger

    streamlit.logger.set_log_level("error")


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
    common.add_argument("--symbol", type=_symbol, help="BTCUSDT, ... or ALL (default: the first configured symbol)")
    common.add_argument("--exchanges", help="comma list, e.g. binance,bybit (default: all configured)")
    common.add_argument("--include-nonlive", action="store_true", help="also count replay/test data")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    ranged = argparse.ArgumentParser(add_help=False)
    ranged.add_argument("--since", type=_day, help="first UTC day, YYYYMMDD")
    ranged.add_argument("--until", type=_day, help="last UTC day (inclusive), YYYYMMDD")
    ranged.add_argument("--hours", type=_hours, help="the last N hours (instead of --since/--until)")

    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__.split("\n\n")[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("snapshot", parents=[common], help="the live 60-minute view from Redis")
    sub.add_parser("totals", parents=[common, ranged], help="accumulated totals (default: whole history)")
    chart = sub.add_parser("chart", parents=[common], help="write the TradingView-style chart as HTML")
    chart.add_argument("--hours", type=_hours, required=True, help="the last N hours")
    chart.add_argument("--out", type=Path, required=True, help="FILE.html")
    export = sub.add_parser("export", parents=[common, ranged], help="stream liquidations to CSV or Parquet")
    export.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    export.add_argument("--side", choices=("LONG", "SHORT"), type=str.upper)
    export.add_argument("--min-usd", type=_usd, default=Decimal(0))
    export.add_argument("--cascade-only", action="store_true")
    return parser


def _exchanges(raw: str | None, settings: Settings) -> tuple[str, ...]:
    if not raw:
        return tuple(settings.exchanges)
    items = tuple(dict.fromkeys(e.strip().lower() for e in raw.split(",") if e.strip()))
    bad = [e for e in items if e not in settings.exchanges]
    if bad or not items:
        raise UsageError(
            f"--exchanges: unknown {', '.join(bad) or 'empty list'}; configured: {','.join(settings.exchanges)}"
        )
    return items


def _range(args: argparse.Namespace, now_ms: int, first_ms: int | None) -> tuple[int, int, str]:
    if args.hours is not None and (args.since or args.until):
        raise UsageError("give either --hours or --since/--until, not both")
    if args.until and not args.since:
        raise UsageError("--until needs --since")
    if args.since:
        until = args.until or datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
        if until < args.since:
            raise UsageError(f"--until {until:%Y%m%d} is before --since {args.since:%Y%m%d}")
        start = _day_ms(args.since)
        end = min(_day_ms(until + timedelta(days=1)), now_ms)
        return start, max(start, end), f"{args.since:%Y%m%d} .. {until:%Y%m%d}"
    if args.hours is not None:
        return now_ms - args.hours * 3_600_000, now_ms, f"last {args.hours} h"
    start = first_ms if first_ms is not None and first_ms < now_ms else now_ms - 3_600_000
    return start, now_ms, "whole history"


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


# ---------------------------------------------------------------- output


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d %H:%M:%S UTC")


def _agg_json(a: Agg, total: Decimal) -> dict[str, Any]:
    share = a.usd / total * 100 if total else None
    return {
        "events": a.events,
        "quantity": f"{a.quantity:f}",
        "usd": f"{a.usd:f}",
        "share_pct": None if share is None else f"{share:.1f}",
    }


def _breakdown_json(b: Breakdown) -> dict[str, Any]:
    from app.data.history import Agg

    total = b.total.usd
    return {
        "total": _agg_json(b.total, total),
        "by_side": {s: _agg_json(b.by_side.get(s, Agg()), total) for s in ("LONG", "SHORT")},
        "by_exchange": {e: _agg_json(a, total) for e, a in sorted(b.by_exchange.items())},
        "largest_usd": None if b.max_usd is None else f"{b.max_usd:f}",
    }


def _breakdown_lines(b: Breakdown, exchanges: Sequence[str]) -> list[str]:
    from app.data.history import Agg
    from app.format import BINANCE_LOWER_BOUND, LONG_SHORT_LABEL, fmt_count, fmt_pct, fmt_qty, fmt_usd, share_pct

    total = b.total.usd
    lines = [
        f"  total      {fmt_usd(total):>22}  {fmt_count(b.total.events):>9} liquidations  {fmt_qty(b.total.quantity)} base"
    ]
    lines.append(f"  {LONG_SHORT_LABEL}:")
    for side in ("LONG", "SHORT"):
        a = b.by_side.get(side, Agg())
        lines.append(
            f"    {side:<8} {fmt_usd(a.usd):>22}  {fmt_pct(share_pct(a.usd, total)):>7}  {fmt_count(a.events):>9}"
        )
    lines.append("  by exchange:")
    for exchange in exchanges:
        a = b.by_exchange.get(exchange, Agg())
        lines.append(
            f"    {exchange:<8} {fmt_usd(a.usd):>22}  {fmt_pct(share_pct(a.usd, total)):>7}  {fmt_count(a.events):>9}"
        )
    if b.max_usd is not None:
        lines.append(f"  largest    {fmt_usd(b.max_usd):>22}")
    if "binance" in exchanges:
        lines.append(f"  note: {BINANCE_LOWER_BOUND}")
    return lines


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


def _snapshot(args: argparse.Namespace, settings: Settings, symbol: str | None, exchanges: tuple[str, ...]) -> None:
    from app.data.connections import open_redis
    from app.data.live import snapshot
    from common.live_view import COLLECTOR_STALE_MS, WINDOW_MS, Keys

    client = open_redis(str(settings.redis_url), settings.redis_timeout_s)
    try:
        snap = snapshot(client, Keys(settings.redis_prefix), symbol, exchanges)
    finally:
        client.close()
    age = snap.collector_age_ms
    collector = "not running" if age is None or age > COLLECTOR_STALE_MS else "running"
    nonlive = sorted(s for s in snap.sources if s != "live")
    start = snap.now_ms - WINDOW_MS
    health = _health_json(snap.collector, snap.health, exchanges)
    data = {
        "command": "snapshot",
        "symbol": symbol or "ALL",
        "exchanges": list(exchanges),
        "window_start": _stamp(start),
        "window_end": _stamp(snap.now_ms),
        "collector": collector,
        "sources": sorted(snap.sources),
        "health": health,
        "cascades": [
            {
                "id": c.id,
                "symbol": c.symbol,
                "side": str(c.side),
                "start": _stamp(c.start_ms),
                "events": c.count,
                "usd": f"{c.value_usd:f}",
                "active": c.active,
            }  # fmt: skip
            for c in snap.cascades
        ],
        **_breakdown_json(snap.totals),
    }
    lines = [
        f"{_one_line(symbol or 'ALL')} · last 60 minutes · {_stamp(start)} .. {_stamp(snap.now_ms)} · collector {collector}"
    ]
    if nonlive:
        lines.append(f"  WARNING: includes {', '.join(_one_line(n.upper()) for n in nonlive)} data — not live")
    lines += _breakdown_lines(snap.totals, exchanges)
    for c in data["cascades"]:
        lines.append(
            f"  cascade {c['start']} {_one_line(c['symbol'])} {c['side']} {c['events']} liquidations "
            f"${Decimal(c['usd']):,.2f}"
        )
    lines += _health_lines(health)
    _emit(args, data, lines)


def _totals(args: argparse.Namespace, settings: Settings, symbol: str | None, exchanges: tuple[str, ...]) -> None:
    from app.data.connections import open_pool
    from app.data.history import Filters, coverage, event_bounds, totals
    from app.format import fmt_pct

    pool = open_pool(str(settings.app_database_url))
    try:
        f = Filters(symbol, exchanges, not args.include_nonlive)
        first, _ = event_bounds(pool, f)
        start, end, label = _range(args, _now_ms(), first)
        b = totals(pool, f, start, end)
        cov = coverage(pool, f, start, end)
    finally:
        pool.close()
    data = {
        "command": "totals",
        "symbol": symbol or "ALL",
        "exchanges": list(exchanges),
        "start": _stamp(start),
        "end": _stamp(end),
        "include_nonlive": args.include_nonlive,
        "connected_pct": {e: f"{p:.1f}" for e, p in sorted(cov.pct_by_exchange.items())},
        **_breakdown_json(b),
    }
    lines = [f"{symbol or 'ALL'} · {label} · {_stamp(start)} .. {_stamp(end)}"]
    if args.include_nonlive:
        lines.append(f"  WARNING: includes {settings.nonlive_source.upper()} data — not live")
    lines += _breakdown_lines(b, exchanges)
    lines.append(
        "  connected: " + ", ".join(f"{e} {fmt_pct(p)} of the period" for e, p in sorted(cov.pct_by_exchange.items()))
    )
    _emit(args, data, lines)


def _chart(args: argparse.Namespace, settings: Settings, symbol: str | None, exchanges: tuple[str, ...]) -> None:
    import pandas as pd

    from app.charts import chart_html, liquidation_chart
    from app.data.connections import open_pool
    from app.data.history import Filters, big_liquidations, candles, coverage, liquidation_bars
    from app.state import INTERVAL_MS, auto_interval

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out: {args.out.name} must end in .html")
    end = _now_ms()
    start = end - args.hours * 3_600_000
    interval = auto_interval(end - start)
    interval_ms = INTERVAL_MS[interval]
    price_exchange = next((e for e in ("binance", "bybit") if e in exchanges), exchanges[0])
    pool = open_pool(str(settings.app_database_url))
    try:
        f = Filters(symbol, exchanges, not args.include_nonlive)
        bars = liquidation_bars(pool, f, start, end, interval_ms)
        prices = (
            candles(pool, price_exchange, symbol, start, end, interval_ms, not args.include_nonlive)
            if symbol is not None
            else pd.DataFrame(columns=["bar", "open", "high", "low", "close", "volume"])
        )
        cov = coverage(pool, f, start, end)
        markers = big_liquidations(pool, f, start, end, settings.institutional_usd)
    finally:
        pool.close()
    fig = liquidation_chart(
        prices,
        bars,
        gaps=cov.merged_gaps(min_ms=interval_ms // 2),
        markers=markers,
        title=f"{symbol or 'ALL'} — {price_exchange} price, liquidations on {', '.join(exchanges)} ({_stamp(start)} .. {_stamp(end)})",
        price_label=f"{symbol} ({price_exchange})" if symbol else "Price",
        min_marker_usd=settings.institutional_usd,
        x_range=(start, end),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(chart_html(fig), encoding="utf-8")
    usd = sum(bars["value_usd"], Decimal(0)) if not bars.empty else Decimal(0)
    data = {
        "command": "chart",
        "out": str(args.out),
        "symbol": symbol or "ALL",
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
            f"wrote {args.out} · {symbol or 'ALL'} · {_stamp(start)} .. {_stamp(end)} · {interval} bars · ${usd:,.2f} liquidated"
        ],
    )


def _export(args: argparse.Namespace, settings: Settings, symbol: str | None, exchanges: tuple[str, ...]) -> None:
    from app.data import explorer
    from app.data.connections import open_pool
    from app.data.scope import Scope, first_event_ms
    from app.downloads import export_to_path, format_for_path

    try:
        format_for_path(args.out)
    except ValueError as exc:
        raise UsageError(f"--out: {exc}") from None
    pool = open_pool(str(settings.app_database_url))
    try:
        first = first_event_ms(pool, args.include_nonlive)
        start, end, _label = _range(args, _now_ms(), first)
        scope = Scope(start, end, symbol, exchanges, args.include_nonlive)
        f = explorer.ExplorerFilter(scope, args.side, args.min_usd, args.cascade_only)
        query, params = explorer.explorer_export_query(f)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows = export_to_path(pool, query, params, args.out, filter_description=f.describe())
    finally:
        pool.close()
    data = {"command": "export", "out": str(args.out), "rows": rows, "filter": f.describe()}
    _emit(args, data, [f"wrote {rows:,} liquidations to {args.out}", f"filter: {f.describe()}"])


_COMMANDS = {"snapshot": _snapshot, "totals": _totals, "chart": _chart, "export": _export}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 with a message on bad arguments
    _quiet_streamlit()
    from app.data.connections import DataUnavailable
    from common.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        symbol = args.symbol or settings.default_symbol
        exchanges = _exchanges(args.exchanges, settings)
        _COMMANDS[args.command](args, settings, None if symbol == "ALL" else symbol, exchanges)
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
