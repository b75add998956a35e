"""Accumulated: totals since the first event (or over the chosen range) from TimescaleDB."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from app.data.connections import DataUnavailable, get_settings
from app.data.history import (
    cached_cascade_count,
    cached_coverage,
    cached_event_bounds,
    cached_largest,
    cached_totals,
    range_end_ms,
)
from app.downloads import download_buttons
from app.format import (
    LONG_SHORT_LABEL,
    agg_table,
    exchange_label,
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
from app.state import current_view

require_access()
st.title("Accumulated")
settings = get_settings()
view = current_view()
url = str(settings.app_database_url)
filters = (view.symbol_filter, view.exchanges, view.live_only, view.side_filter)
now = range_end_ms()
mixed = view.symbol_filter is None

try:
    first_ever, _ = cached_event_bounds(url, *filters)
    start, end = view.time_range(now, first_ever)
    first, last = cached_event_bounds(url, *filters, start, end)
    totals = cached_totals(url, *filters, start, end)
    coverage = cached_coverage(url, view.symbol_filter, view.exchanges, view.live_only, start, end)
    cascades = cached_cascade_count(url, *filters, start, end)
    largest = cached_largest(url, *filters, start, end) if totals.total.events else None
except DataUnavailable as exc:
    st.error(f"History unavailable: {plain_md(exc)}")
    st.stop()

period = "since the first event" if view.hours is None and view.since is None else view.range_label()
st.caption(
    f"{plain_md(view.symbol)} on {plain_md(', '.join(view.exchanges))}, {period}: "
    f"{fmt_datetime(start)} .. {fmt_datetime(end)}"
)

if first_ever is None:
    st.info(
        "No liquidations stored yet for this filter. If this is a fresh install, start the collector "
        "and check the Live page: totals appear here as soon as the first liquidation is written."
    )
    st.stop()

hours = Decimal(max(end - start, 1)) / Decimal(3_600_000)
c1, c2, c3 = st.columns(3)
c1.metric("First event (UTC)", f"{fmt_date(first)} {fmt_time(first)}")
c2.metric("Last event (UTC)", f"{fmt_date(last)} {fmt_time(last)}")
c3.metric("Collection duration", fmt_duration((end - start) / 1000))

c1, c2, c3, c4 = st.columns(4)
c1.metric("Liquidations", fmt_count(totals.total.events))
c2.metric("Base quantity", "n/a (mixed assets)" if mixed else fmt_qty(totals.total.quantity))
c3.metric("USD liquidated", fmt_usd(totals.total.usd))
c4.metric("Cascades", fmt_count(cascades))

c1, c2, c3 = st.columns(3)
c1.metric("Events per hour", f"{Decimal(totals.total.events) / hours:,.1f}")
c2.metric("Base per hour", "n/a (mixed assets)" if mixed else fmt_qty(totals.total.quantity / hours))
c3.metric("USD per hour", fmt_usd(totals.total.usd / hours))

if totals.total.events == 0:
    st.info("No liquidations in this range. Widen the time range in the sidebar.")

st.subheader("Stream coverage")
covered = ", ".join(
    f"{plain_md(exchange)} connected {fmt_pct(p)} of the period" for exchange, p in coverage.pct_by_exchange.items()
)
st.markdown(f"{covered}. Time without a connection is missing data, not a quiet market.")

if totals.total.events:
    st.subheader(LONG_SHORT_LABEL)
    side_rows = pd.DataFrame(agg_table(totals.by_side, "Side", ("LONG", "SHORT"), mixed))
    st.dataframe(side_rows.style.map(side_style, subset=["Side"]), hide_index=True)
    st.subheader("Per exchange")
    by_exchange = {exchange_label(k): v for k, v in totals.by_exchange.items()}
    exchange_rows = pd.DataFrame(agg_table(by_exchange, "Exchange", mixed_assets=mixed))
    st.dataframe(exchange_rows, hide_index=True)
    if lower_bound(totals.by_exchange):
        st.caption(lower_bound(totals.by_exchange))
    download_buttons(
        pd.concat([side_rows, exchange_rows], ignore_index=True),
        name="accumulated-totals",
        filter_description=view.describe(),
        key="acc-totals",
    )

if largest is not None:
    st.subheader("Largest single liquidation")
    st.markdown(
        f"**{fmt_usd(largest['value_usd'])}** — {plain_md(largest['side'])} {plain_md(largest['symbol'])} on "
        f"{plain_md(exchange_label(largest['exchange']))}, {fmt_qty(largest['quantity'])} @ {fmt_usd(largest['price'])}, "
        f"{fmt_datetime(largest['time_ms'])}"
    )
