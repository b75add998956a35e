"""Live: the last 60 minutes from Redis, refreshed every 10 s (only the panel reruns)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.data.connections import DataUnavailable, get_settings
from app.data.live import LiveSnapshot, cached_snapshot, stream_age_s
from app.downloads import download_buttons
from app.format import (
    BINANCE_LOWER_BOUND,
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
    side_style,
)
from app.gate import ensure_frame
from app.state import current_view
from common.live_view import COLLECTOR_STALE_MS, WINDOW_MS

_LATEST_ROWS = 200


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
    connected: list[str] = []
    window_start = snap.now_ms - WINDOW_MS
    for exchange in exchanges:
        h = snap.health.get(exchange)
        if h is None:
            st.warning(f"Stream {exchange}: not connected yet (no health reported by the collector).")
        elif not h.get("connected"):
            error = f" Last error: {h['last_error']}" if h.get("last_error") else ""
            st.warning(
                f"Stream {exchange} disconnected: last message {fmt_age(stream_age_s(h, snap.now_ms))}, "
                f"reconnects {h.get('reconnects', 0)}. Liquidations from it are missing.{error}"
            )
        else:
            connected.append(exchange)
            since = h.get("connected_since_ms")
            if isinstance(since, int) and since > window_start:
                # A stream that (re)connected inside the window did not see the part before it.
                st.info(
                    f"Stream {exchange} connected since {fmt_datetime(since)}: the window before that is "
                    "missing data for it, not a quiet market."
                )
    return connected


def _explain_empty(symbol: str, exchanges: tuple[str, ...], connected: list[str]) -> None:
    """No events in the window: quiet market only where the stream was actually connected."""
    missing = [e for e in exchanges if e not in connected]
    if not connected:
        st.warning(
            f"No liquidations received for {symbol}: none of the selected streams ({', '.join(exchanges)}) "
            "is connected, so this is missing data, not a quiet market."
        )
    elif missing:
        st.info(
            f"No liquidations in the last 60 minutes for {symbol} on {', '.join(connected)} (connected: the "
            f"market was quiet there). {', '.join(missing)}: not connected, its data is missing."
        )
    else:
        st.info(
            f"No liquidations in the last 60 minutes for {symbol} on {', '.join(exchanges)}. "
            "The collector is running and the streams are connected; the market has simply been quiet."
        )


def _latest_table(snap: LiveSnapshot) -> pd.DataFrame:
    ev = snap.events.head(_LATEST_ROWS)
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
                "Connected": "yes" if h.get("connected") else "no",
                "Last message": fmt_age(stream_age_s(h, snap.now_ms)) if h else "never",
                "Reconnects": fmt_count(h.get("reconnects", 0)),
                "Last error": h.get("last_error") or "",
                "Drops": fmt_count(sum(drops.values()))
                + (f" ({', '.join(f'{k}: {v}' for k, v in drops.items())})" if drops else ""),
            }
        )
    return pd.DataFrame(rows)


@st.fragment(run_every=10)
def live_panel() -> None:
    settings = get_settings()
    view = current_view()
    try:
        snap = cached_snapshot(str(settings.redis_url), settings.redis_prefix, view.symbol_filter, view.exchanges)
    except DataUnavailable as exc:
        st.error(f"Live view unavailable: {exc}")
        return

    if snap.nonlive_sources:
        st.error(
            f"**{', '.join(s.upper() for s in snap.nonlive_sources)} data — not live.** "
            "The collector is writing replayed or test events; these are not real-time market liquidations.",
            icon=":material/science:",
        )
    running = _status(snap, view.exchanges)
    st.caption(f"Window: {fmt_datetime(snap.now_ms - 3_600_000)} .. {fmt_datetime(snap.now_ms)} · refreshes every 10 s")

    t = snap.totals
    mixed = view.symbol_filter is None
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Liquidations", fmt_count(t.total.events))
    c2.metric("Base quantity", "n/a (mixed assets)" if mixed else fmt_qty(t.total.quantity))
    c3.metric("USD liquidated", fmt_usd(t.total.usd))
    c4.metric("Cascades", fmt_count(len(snap.cascades)))
    if t.total.events == 0:
        if running is not None:
            _explain_empty(view.symbol, view.exchanges, running)
        return

    st.subheader(LONG_SHORT_LABEL)
    sides = pd.DataFrame(agg_table(t.by_side, "Side", ("LONG", "SHORT"), mixed))
    st.dataframe(sides.style.map(side_style, subset=["Side"]), hide_index=True)
    st.subheader("Per exchange")
    by_exchange = {exchange_label(k): v for k, v in t.by_exchange.items()}
    st.dataframe(pd.DataFrame(agg_table(by_exchange, "Exchange", mixed_assets=mixed)), hide_index=True)
    if "binance" in t.by_exchange:
        st.caption(BINANCE_LOWER_BOUND)
    download_buttons(
        pd.concat([sides, pd.DataFrame(agg_table(by_exchange, "Exchange", mixed_assets=mixed))], ignore_index=True),
        name="live-totals",
        filter_description=view.describe() + " window=last 60 minutes",
        key="live-totals",
    )

    st.subheader("Latest liquidations")
    latest = _latest_table(snap)
    st.dataframe(latest.style.map(side_style, subset=["Side"]), hide_index=True)
    download_buttons(snap.events, name="live-liquidations", filter_description=view.describe(), key="live-latest")

    st.subheader("Cascades")
    if snap.cascades:
        cascades = _cascade_table(snap)
        st.dataframe(cascades.style.map(side_style, subset=["Side"]), hide_index=True)
        download_buttons(cascades, name="live-cascades", filter_description=view.describe(), key="live-cascades")
    else:
        st.caption("No cascades in the last 60 minutes.")


@st.fragment(run_every=10)
def health_panel() -> None:
    settings = get_settings()
    view = current_view()
    try:
        snap = cached_snapshot(str(settings.redis_url), settings.redis_prefix, view.symbol_filter, view.exchanges)
    except DataUnavailable:
        return  # the live panel already said so
    st.subheader("Stream health")
    health = _health_table(snap, view.exchanges)
    st.dataframe(health, hide_index=True)
    download_buttons(health, name="stream-health", filter_description=view.describe(), key="live-health")


ensure_frame()
st.title("Live — last 60 minutes")
live_panel()
health_panel()
