"""Accumulated: totals since the first event (or over the chosen range) from TimescaleDB."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from app.cache import cascade_count, db, query_range
from app.data.connections import DataUnavailable
from app.data.history import coverage, largest, totals
from app.data.rows import event_bounds
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
from app.query import CASCADE_RULE, MIN_USD_RULE
from app.state import current_query

require_access()
st.title("Accumulated")
q = current_query()
mixed = q.is_all

try:
    start, end = query_range(q)
    first, last = db(event_bounds, q, start, end)
    sums = db(totals, q, start, end)
    covered = db(coverage, q, start, end)
    cascades = cascade_count(q, start, end)
    biggest = db(largest, q, start, end) if sums.total.events else None
except DataUnavailable as exc:
    st.error(f"History unavailable: {plain_md(exc)}")
    st.stop()

period = "since the first event" if q.whole_history else q.range_label()
st.caption(
    f"{plain_md(q.target.label)} on {plain_md(', '.join(q.venues))}, {period}: "
    f"{fmt_datetime(start)} .. {fmt_datetime(end)} · side {q.side_label} · {CASCADE_RULE}"
    + (f" · {MIN_USD_RULE}" if q.min_usd > 0 else "")
)

if first is None and q.whole_history:
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
c1.metric("Liquidations", fmt_count(sums.total.events))
c2.metric(
    "Base quantity",
    "n/a (mixed assets)" if mixed else fmt_qty(sums.total.quantity),
    help=f"in {q.unit}" if q.unit else None,
)
c3.metric("USD liquidated", fmt_usd(sums.total.usd))
c4.metric("Cascades", fmt_count(cascades))

c1, c2, c3 = st.columns(3)
c1.metric("Events per hour", f"{Decimal(sums.total.events) / hours:,.1f}")
c2.metric("Base per hour", "n/a (mixed assets)" if mixed else fmt_qty(sums.total.quantity / hours))
c3.metric("USD per hour", fmt_usd(sums.total.usd / hours))

if sums.total.events == 0:
    st.info("No liquidations in this range. Widen the time range in the sidebar.")

st.subheader("Stream coverage")
connected = ", ".join(
    f"{plain_md(exchange)} connected {fmt_pct(p)} of the period" for exchange, p in covered.pct_by_exchange.items()
)
st.markdown(f"{connected}. Time without a connection is missing data, not a quiet market.")

if sums.total.events:
    st.subheader(LONG_SHORT_LABEL)
    side_rows = pd.DataFrame(agg_table(sums.by_side, "Side", ("LONG", "SHORT"), mixed))
    st.dataframe(side_rows.style.map(side_style, subset=["Side"]), hide_index=True)
    st.subheader("Per exchange")
    by_exchange = {exchange_label(k): v for k, v in sums.by_exchange.items()}
    exchange_rows = pd.DataFrame(agg_table(by_exchange, "Exchange", mixed_assets=mixed))
    st.dataframe(exchange_rows, hide_index=True)
    if lower_bound(sums.by_exchange):
        st.caption(lower_bound(sums.by_exchange))
    download_buttons(
        pd.concat([side_rows, exchange_rows], ignore_index=True),
        name="accumulated-totals",
        filter_description=q.describe(start, end),
        key="acc-totals",
    )

if biggest is not None:
    st.subheader("Largest single liquidation")
    st.markdown(
        f"**{fmt_usd(biggest['value_usd'])}** — {plain_md(biggest['side'])} {plain_md(biggest['symbol'])} on "
        f"{plain_md(exchange_label(biggest['exchange']))}, {fmt_qty(biggest['quantity'])} @ {fmt_usd(biggest['price'])}, "
        f"{fmt_datetime(biggest['time_ms'])}"
    )
