"""Chart: candles, volume and liquidation bars (LONG down in red, SHORT up in green) on one time axis."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.cache import db, get_settings, query_range
from app.charts import chart_html, liquidation_chart
from app.data.connections import DataUnavailable
from app.data.history import big_liquidations, candles, coverage, liquidation_bars, marker_limit, price_pair
from app.downloads import download_buttons
from app.format import fmt_datetime, fmt_pct, fmt_usd, lower_bound, plain_md
from app.gate import require_access
from app.query import INTERVAL_MS, INTERVALS, auto_interval
from app.state import current_query, set_query

_MAX_BARS = 3000  # more bars than pixels only slows the browser down
_NO_CANDLES = pd.DataFrame(columns=["bar", "open", "high", "low", "close", "volume"])

require_access()
st.title("Chart")
settings = get_settings()
q = current_query()

if "c_interval" not in st.session_state:
    st.session_state["c_interval"] = q.interval
if "c_markers" not in st.session_state:
    st.session_state["c_markers"] = q.markers
marker_usd = max(settings.institutional_usd, q.min_usd)
left, right, _spacer = st.columns([1, 1, 2])
interval_choice = left.selectbox(
    "Bar interval",
    list(INTERVALS),
    key="c_interval",
    help="auto follows the time range in the sidebar: 1 h → 1m, 24 h → 5m, 7 days → 1h, 30 days → 4h, 1 year → 1d",
)
show_markers = right.toggle(
    f"Mark liquidations ≥ {fmt_usd(marker_usd)}",
    key="c_markers",
    help="Institutional-size events (or the sidebar's minimum size, if larger)",
)
if interval_choice != q.interval or show_markers != q.markers:
    q = q.with_changes(interval=interval_choice, markers=show_markers)
    set_query(q)

pair = price_pair(q)
try:
    start, end = query_range(q)
    interval = q.bar_interval(end - start)
    if (end - start) / INTERVAL_MS[interval] > _MAX_BARS:
        wider = auto_interval(end - start)
        st.warning(f"{interval} bars over {q.range_label()} would be too many to draw; using {wider}.")
        interval = wider
    interval_ms = INTERVAL_MS[interval]
    bars = db(liquidation_bars, q, start, end, interval_ms)
    prices = (
        db(candles, pair[0], pair[1], start, end, interval_ms, not q.include_nonlive)
        if pair is not None
        else _NO_CANDLES
    )
    covered = db(coverage, q, start, end)
    markers = db(big_liquidations, q, start, end, marker_usd, marker_limit(end - start)) if q.markers else None
except DataUnavailable as exc:
    st.error(f"History unavailable: {plain_md(exc)}")
    st.stop()

st.caption(
    f"{plain_md(q.target.label)} · {plain_md(', '.join(q.venues))} · {q.range_label()} · {interval} bars · "
    f"side {q.side_label} · {fmt_datetime(start)} .. {fmt_datetime(end)} · streams connected "
    + ", ".join(f"{plain_md(e)} {fmt_pct(p)}" for e, p in covered.pct_by_exchange.items())
    + " · bars count every size; the minimum size applies to the markers"
)
price_name = f"{pair[1]} ({pair[0]})" if pair is not None else ""
if pair is None:
    st.info("Price and volume need a coin or a contract; with ALL the chart shows liquidations summed in USD.")
elif prices.empty:
    st.info(
        f"No {plain_md(pair[0])} candles for {plain_md(pair[1])} in this range yet "
        "(the collector stores them per minute)."
    )
if bars.empty and prices.empty:
    st.info(
        "Nothing to draw: no liquidations and no candles in this range. On a fresh install start the collector; "
        "otherwise widen the time range in the sidebar."
    )
    st.stop()

fig = liquidation_chart(
    prices,
    bars,
    gaps=covered.merged_gaps(min_ms=interval_ms // 2),
    markers=markers,
    title=f"{q.target.label} — {price_name or 'no'} price, liquidations on {', '.join(q.venues)}",
    price_label=price_name or "Price",
    min_marker_usd=marker_usd,
    x_range=(start, end),
)
st.plotly_chart(fig, config={"displaylogo": False})
st.caption(f"{lower_bound(q.venues)} Grey stretches: no stream coverage (missing data).".strip())

stem = f"liquidations-{q.target.param}-{interval}"
st.download_button(
    "Download chart (HTML)",
    data=lambda: chart_html(fig),
    file_name=f"{stem}.html",
    mime="text/html",
    on_click="ignore",
    key="chart-html",
    icon=":material/download:",
)
if not bars.empty:
    download_buttons(bars, name=f"{stem}-bars", filter_description=q.describe(start, end), key="chart-bars")
