"""Live: the last 60 minutes from Redis, refreshed every 10 s (only the panels rerun).

The figures come from the collector's per-bucket sums (bounded work whatever the window holds);
the table shows the latest liquidations only. Venue and error text is escaped (`plain_md`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app.cache import live_snapshot
from app.data.connections import DataUnavailable
from app.data.live import (
    LATEST_ROWS,
    MAX_SCAN,
    SHOWN_ITEMS,
    LiveSnapshot,
    VenueInstruments,
    stream_age_s,
    venue_instruments,
)
from app.downloads import download_buttons
from app.format import (
    LONG_SHORT_LABEL,
    agg_table,
    exchange_label,
    fmt_age,
    fmt_count,
    fmt_date,
    fmt_datetime,
    fmt_duration,
    fmt_pct,
    fmt_qty,
    fmt_time,
    fmt_usd,
    lower_bound,
    plain_md,
    side_style,
)
from app.gate import require_access
from app.query import CASCADE_RULE, Query, now_ms
from app.state import current_query
from common.live_view import BEHIND_WARN_S, COLLECTOR_STALE_MS, WINDOW_MS


def _one_line(text: object) -> str:
    """Text for a table cell (shown as text, never markup): one line."""
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in str(text))


def _status(snap: LiveSnapshot, exchanges: tuple[str, ...]) -> list[str] | None:
    """Say what state the pipeline is in. Returns the selected exchanges whose stream is connected,
    or None when the collector is not running."""
    state = snap.collector_state()
    if state == "missing":
        st.error("Collector not running: no heartbeat in Redis. Start the collector; nothing below is current.")
        return None
    if state == "stale":
        age = (snap.collector_age_ms or 0) / 1000
        st.error(
            f"Collector not running: its last heartbeat was {fmt_duration(age)} ago "
            f"(more than {COLLECTOR_STALE_MS // 1000} s). Figures below are what it wrote before it stopped."
        )
        return None
    _collector_alerts(snap.collector or {})
    _instrument_alerts(venue_instruments(snap.collector, snap.health, exchanges))
    connected: list[str] = []
    window_start = snap.now_ms - WINDOW_MS
    for exchange in exchanges:
        h = snap.health.get(exchange)
        name = plain_md(exchange)
        if h is None:
            st.warning(f"Stream {name}: not connected yet (no health reported by the collector).")
        elif not h.get("connected"):
            error = f" Last error: {plain_md(h['last_error'])}" if h.get("last_error") else ""
            st.warning(
                f"Stream {name} disconnected: last message {fmt_age(stream_age_s(h, snap.now_ms))}, "
                f"reconnects {plain_md(h.get('reconnects', 0))}. Liquidations from it are missing.{error}"
            )
        else:
            connected.append(exchange)
            since = h.get("connected_since_ms")
            if isinstance(since, int) and since > window_start:
                # A stream that (re)connected inside the window did not see the part before it.
                st.info(
                    f"Stream {name} connected since {fmt_datetime(since)}: the window before that is "
                    "missing data for it, not a quiet market."
                )
    return connected


def _collector_alerts(c: dict[str, Any]) -> None:
    """Storage trouble the running collector reports (keys it does not report show nothing)."""
    database = c.get("database")
    if database is not None and database != "ok":
        error = f": {plain_md(c['database_error'])}" if c.get("database_error") else ""
        st.warning(
            f"TimescaleDB {plain_md(database)}{error}. The collector keeps new events in its spool on disk "
            "and writes them once the database answers; the live figures are not affected."
        )
    spool = c.get("spool")
    if isinstance(spool, dict) and spool.get("error"):
        st.error(f"The collector's spool cannot write to disk: {plain_md(spool['error'])}.")
    if c.get("backpressure"):
        st.error(
            "Backpressure: the spool takes no more batches, so the collector reads the streams only as fast "
            "as it can store; liquidations may be missed while this lasts."
        )
    behind = c.get("behind_s")
    if isinstance(behind, (int, float)) and behind >= BEHIND_WARN_S:
        st.warning(
            f"The collector is {behind:,.1f} s or more behind the venues ({_queue_text(c)}): a burst faster "
            "than it can process, or storage holding it back. The live figures trail the market by at least "
            "that much; nothing is dropped, they catch up once it eases."
        )
    quarantined = c.get("quarantined_rows")
    if isinstance(quarantined, int) and quarantined > 0:
        reason = f" Last reason: {plain_md(c['last_quarantine_reason'])}" if c.get("last_quarantine_reason") else ""
        st.warning(
            f"{fmt_count(quarantined)} rows refused by TimescaleDB as data were set aside in the quarantine file "
            f"(every other row was stored).{reason}"
        )


def _queue_text(c: dict[str, Any]) -> str:
    text = f"{fmt_count(c.get('queue', 0))} events queued"
    return text + (f" of at most {fmt_count(c['queue_max'])}" if c.get("queue_max") else "")


def _named(items: list[str], more_than: int = SHOWN_ITEMS) -> tuple[list[str], str]:
    """At most `more_than` items, and the text for the rest ("" when none is left out)."""
    rest = len(items) - more_than
    return items[:more_than], (f" and {rest} more" if rest > 0 else "")


def _instrument_alerts(venues: list[VenueInstruments]) -> None:
    """No list, a stored list, refused topics, configured symbols a venue does not list (escaped)."""
    for v in venues:
        name = plain_md(v.exchange)
        error = f" Last REST error: {plain_md(v.error)}." if v.error else ""
        retry = f" Retrying in {v.next_attempt_s:.0f} s." if v.next_attempt_s else ""
        if v.problem:
            st.error(f"Instruments {name}: {v.problem}.{error}{retry}")  # our own text: no venue text in it
        elif v.warning:
            st.warning(f"Instruments {name}: {v.warning}.{error}{retry}")
        if v.refused:
            shown, more = _named([f"{t} ({r})" for t, r in v.refused.items()], 5)
            st.warning(
                f"Stream {name}: {fmt_count(len(v.refused))} topics refused by the venue, not collected: "
                f"{plain_md('; '.join(shown))}{more}. The other topics carry on."
            )
        if v.unlisted:
            shown, more = _named(v.unlisted)
            st.warning(
                f"{name} does not list {plain_md(', '.join(shown))}{more} (configured in LIQ_SYMBOLS): "
                "not collected there."
            )


def _explain_empty(symbol: str, exchanges: tuple[str, ...], connected: list[str]) -> None:
    """No events in the window: quiet market only where the stream was actually connected."""
    missing = [e for e in exchanges if e not in connected]
    name = plain_md(symbol)
    if not connected:
        st.warning(
            f"No liquidations received for {name}: none of the selected streams "
            f"({plain_md(', '.join(exchanges))}) is connected, so this is missing data, not a quiet market."
        )
    elif missing:
        st.info(
            f"No liquidations in the last 60 minutes for {name} on {plain_md(', '.join(connected))} (connected: "
            f"the market was quiet there). {plain_md(', '.join(missing))}: not connected, its data is missing."
        )
    else:
        st.info(
            f"No liquidations in the last 60 minutes for {name} on {plain_md(', '.join(exchanges))}. "
            "The collector is running and the streams are connected; the market has simply been quiet."
        )


def _latest_table(snap: LiveSnapshot) -> pd.DataFrame:
    ev = snap.events.head(LATEST_ROWS)
    return pd.DataFrame(
        {
            "Date": [fmt_date(t) for t in ev["time_ms"]],
            "Time (UTC)": [fmt_time(t) for t in ev["time_ms"]],
            "Exchange": list(ev["exchange"]),
            "Symbol": list(ev["symbol"]),
            "Side": list(ev["side"]),
            "Amount": [fmt_qty(q) for q in ev["quantity"]],
            "USD": [fmt_usd(v) for v in ev["value_usd"]],
            "Price": [fmt_usd(p) for p in ev["price"]],
        }
    )


def _cascade_table(snap: LiveSnapshot) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "State": "active" if c.active else "ended",
                "Symbol": c.symbol,
                "Side": str(c.side),
                "Start (UTC)": fmt_datetime(c.start_ms),
                "Last (UTC)": fmt_time(c.end_ms),
                "Events": fmt_count(c.count),
                "USD": fmt_usd(c.value_usd),
                "Exchanges": ", ".join(f"{k} {v}" for k, v in sorted(c.counts.items())),
                "Price move": fmt_pct(c.price_move_pct),
                "Risk": str(c.risk_score),
            }
            for c in snap.cascades
        ]
    )


def _health_table(snap: LiveSnapshot, exchanges: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for exchange in exchanges:
        h = snap.health.get(exchange, {})
        drops = h.get("drops") or {}
        rows.append(
            {
                "Stream": exchange,
                "Connected": _connected_text(h),
                "Last message": fmt_age(stream_age_s(h, snap.now_ms)) if h else "never",
                "Reconnects": fmt_count(h.get("reconnects", 0)),
                "Last error": _one_line(h.get("last_error") or ""),
                "Drops": fmt_count(sum(drops.values()))
                + (f" ({', '.join(f'{_one_line(k)}: {v}' for k, v in drops.items())})" if drops else ""),
            }
        )
    return pd.DataFrame(rows)


def _connected_text(h: dict[str, Any]) -> str:
    """yes / no; with several collectors, how many of them hold the venue (it is down only when none does)."""
    text = "yes" if h.get("connected") else "no"
    collectors = h.get("collectors")
    if isinstance(collectors, int) and collectors > 1:
        text += f" ({_one_line(h.get('collectors_connected', 0))} of {collectors} collectors)"
    return text


def _collectors_table(c: dict[str, Any], now: int) -> pd.DataFrame:
    """Every collector heard from in the last seconds (two collectors write one record)."""
    rows = []
    for item in c.get("collectors") or []:
        if not isinstance(item, dict):
            continue
        beat = item.get("heartbeat_ms")
        rows.append(
            {
                "Collector": _one_line(item.get("instance", "?")),
                "Role": "stopping" if item.get("stopped") else ("leader" if item.get("leader") else "follower"),
                "Heartbeat": fmt_age((now - beat) / 1000) if isinstance(beat, int) else "",
                "TimescaleDB": _one_line(item.get("database") or ""),
                "Spool": _one_line(item.get("spool") or ""),
                "Backpressure": "yes" if item.get("backpressure") else "no",
            }
        )
    return pd.DataFrame(rows)


def _listed(items: list[str]) -> str:
    shown, more = _named(items)
    return _one_line(", ".join(shown)) + more


def _instruments_table(venues: list[VenueInstruments]) -> pd.DataFrame:
    """Per venue: instruments tracked, topics refused or missing, connections, last refresh (text)."""

    def count(n: int | None) -> str:
        return "" if n is None else fmt_count(n)

    rows = []
    for v in venues:
        refused = (
            f"{fmt_count(len(v.refused))} ({_listed([f'{t}: {r}' for t, r in v.refused.items()])})"
            if v.refused
            else ("0" if v.stream else "")
        )
        missing = f"{fmt_count(len(v.unlisted))} ({_listed(v.unlisted)})" if v.unlisted else ("0" if v.catalog else "")
        source = _one_line(v.source or "")
        if v.problem or v.warning:
            source += f" — {_one_line(v.problem or v.warning)}"
        rows.append(
            {
                "Venue": v.exchange,
                "Tracked": count(v.tracked),
                "Listed": count(v.listed),
                "Candles": count(v.candles),
                "Connections": count(v.connections),
                "Topics": count(v.topics),
                "Refused": refused,
                "Missing": missing,
                "Skipped": ", ".join(f"{_one_line(k)}: {n}" for k, n in v.skipped.items()),
                "Last refresh (UTC)": (fmt_datetime(v.last_refresh_ms) if v.last_refresh_ms else "never")
                if v.catalog
                else "",
                "List source": source,
            }
        )
    return pd.DataFrame(rows)


def _collector_table(c: dict[str, Any]) -> pd.DataFrame:
    """What the collector reports about its storage, one row per reported item."""
    rows: list[tuple[str, str]] = []
    if "database" in c:
        error = c.get("database_error") or ""
        rows.append(("TimescaleDB", _one_line(c["database"]) + (f" — {_one_line(error)}" if error else "")))
    spool = c.get("spool")
    if isinstance(spool, dict):
        text = f"{_one_line(spool.get('state', '?'))}, {fmt_count(spool.get('pending_events', 0))} events"
        if "bytes" in spool:
            text += f", {fmt_count(spool['bytes'])} bytes"
        if spool.get("error"):
            text += f" — {_one_line(spool['error'])}"
        rows.append(("Spool", text))
    if "behind_s" in c:
        rows.append(("Behind the venues", f"{_one_line(c['behind_s'])} s ({_queue_text(c)})"))
    if "backpressure" in c or "backpressure_s" in c:
        text = "yes" if c.get("backpressure") else "no"
        if "backpressure_s" in c:
            text += f" ({_one_line(c['backpressure_s'])} s in all)"
        rows.append(("Backpressure", text))
    if "quarantined_rows" in c:
        text = fmt_count(c["quarantined_rows"])
        if c.get("last_quarantine_reason"):
            text += f" — last reason: {_one_line(c['last_quarantine_reason'])}"
        if c.get("quarantine_file"):
            text += f" ({_one_line(c['quarantine_file'])})"
        rows.append(("Quarantined rows", text))
    if "invalid_events" in c:
        rows.append(("Invalid events dropped", fmt_count(c["invalid_events"])))
    return pd.DataFrame(rows, columns=["Collector", "State"])


def _snapshot() -> LiveSnapshot | None:
    q = current_query()
    try:
        return live_snapshot(q, now_ms())
    except DataUnavailable as exc:
        st.error(f"Redis unavailable — the live view cannot be shown: {plain_md(exc)}")
        return None


@st.fragment(run_every=10)
def live_panel() -> None:
    """One snapshot per refresh (one Redis deadline at most when Redis hangs) for both sections."""
    view = current_query()
    snap = _snapshot()
    if snap is None:
        return
    _live_section(snap, view)
    _health_section(snap, view)


def _live_section(snap: LiveSnapshot, view: Query) -> None:
    if snap.nonlive_sources:
        st.error(
            f"**{plain_md(', '.join(s.upper() for s in snap.nonlive_sources))} data — not live.** "
            "The collector is writing replayed or test events; these are not real-time market liquidations. "
            + (
                "They are counted below (Include non-live data is on)."
                if view.include_nonlive
                else "They are left out below, as on every page; turn on Include non-live data to count them."
            ),
            icon=":material/science:",
        )
    running = _status(snap, view.venues)
    st.caption(
        f"{plain_md(view.target.label)} on {plain_md(', '.join(view.venues))} · side {view.side_label} · "
        f"{'all sources' if view.include_nonlive else 'live only'} · window: {fmt_datetime(snap.now_ms - WINDOW_MS)} .. "
        f"{fmt_datetime(snap.now_ms)} · refreshes every 10 s · the sidebar's time range does not apply here (this "
        f"page is always the last 60 minutes) · totals count every size; the minimum size applies to the latest "
        f"liquidations and the cascades · {CASCADE_RULE}"
    )

    t = snap.totals
    mixed = view.is_all
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Liquidations", fmt_count(t.total.events))
    c2.metric("Base quantity", "n/a (mixed assets)" if mixed else fmt_qty(t.total.quantity))
    c3.metric("USD liquidated", fmt_usd(t.total.usd))
    c4.metric("Cascades", fmt_count(len(snap.cascades)))
    if t.total.events == 0:
        if running is not None:
            _explain_empty(view.target.label, view.venues, running)
        return

    st.subheader(LONG_SHORT_LABEL)
    sides = pd.DataFrame(agg_table(t.by_side, "Side", ("LONG", "SHORT"), mixed))
    st.dataframe(sides.style.map(side_style, subset=["Side"]), hide_index=True)
    st.subheader("Per exchange")
    by_exchange = {exchange_label(k): v for k, v in t.by_exchange.items()}
    st.dataframe(pd.DataFrame(agg_table(by_exchange, "Exchange", mixed_assets=mixed)), hide_index=True)
    if lower_bound(t.by_exchange):
        st.caption(lower_bound(t.by_exchange))
    download_buttons(
        pd.concat([sides, pd.DataFrame(agg_table(by_exchange, "Exchange", mixed_assets=mixed))], ignore_index=True),
        name="live-totals",
        filter_description=view.describe(snap.now_ms - WINDOW_MS, snap.now_ms),
        key="live-totals",
    )

    st.subheader("Latest liquidations")
    latest = _latest_table(snap)
    st.dataframe(latest.style.map(side_style, subset=["Side"]), hide_index=True)
    shown = len(latest)
    if not snap.latest_complete:
        st.caption(
            f"The latest {fmt_count(shown)} of {fmt_count(t.total.events)}: the selection is rare among the latest "
            f"{fmt_count(MAX_SCAN)} liquidations of all symbols. Explorer lists every one."
        )
    elif shown < t.total.events:
        st.caption(f"The latest {fmt_count(shown)} of {fmt_count(t.total.events)}; Explorer lists every one.")
    download_buttons(
        snap.events,
        name="live-latest",
        filter_description=view.describe(snap.now_ms - WINDOW_MS, snap.now_ms) + f"; latest {shown}",
        key="live-latest",
    )

    st.subheader("Cascades")
    if snap.cascades:
        cascades = _cascade_table(snap)
        st.dataframe(cascades.style.map(side_style, subset=["Side"]), hide_index=True)
        download_buttons(
            cascades,
            name="live-cascades",
            filter_description=view.describe(snap.now_ms - WINDOW_MS, snap.now_ms),
            key="live-cascades",
        )
    else:
        st.caption("No cascades in the last 60 minutes.")


def _health_section(snap: LiveSnapshot, view: Query) -> None:
    st.subheader("Stream health")
    health = _health_table(snap, view.exchanges)
    st.dataframe(health, hide_index=True)
    download_buttons(
        health, name="stream-health", filter_description=f"exchanges {','.join(view.exchanges)}", key="live-health"
    )
    venues = venue_instruments(snap.collector, snap.health, view.exchanges)
    if venues:
        st.subheader("Instruments")
        st.dataframe(_instruments_table(venues), hide_index=True)
    collectors = _collectors_table(snap.collector or {}, snap.now_ms)
    if len(collectors) > 1:
        st.subheader("Collectors")
        st.caption(
            "Several collectors write one record: each liquidation is stored once, and a venue is down only "
            "when every collector lost it. The leader writes cascades and runs the periodic jobs."
        )
        st.dataframe(collectors, hide_index=True)
    collector = _collector_table(snap.collector or {})
    if len(collector):
        st.subheader("Collector storage")
        st.dataframe(collector, hide_index=True)


require_access()
st.title("Live — last 60 minutes")
live_panel()
