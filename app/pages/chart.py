"""Chart: candles, volume and liquidation bars (LONG down in red, SHORT up in green) on one time axis."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.charts import chart_html, liquidation_chart
from app.data.connections import DataUnavailable, get_settings
from app.data.history import (
    cached_big_liquidations,
    cached_candles,
    cached_coverage,
    cached_event_bounds,
    cached_liquidation_bars,
    range_end_ms,
)
from app.downloads import download_buttons
from app.format import fmt_datetime, fmt_pct, fmt_usd, lower_bound, plain_md
from app.gate import require_access
from app.state import INTERVAL_MS, INTERVALS, auto_interval, current_view, set_view
from common import venues

_MAX_BARS = 3000  # more bars than pixels only slows the browser down

require_access()
st.title("Chart")
settings = get_settings()
view = current_view()
url = str(settings.app_database_url)

if "c_interval" not in st.session_state:
    st.session_state["c_interval"] = view.interval
if "c_markers" not in st.session_state:
    st.session_state["c_markers"] = view.markers
left, right, _spacer = st.columns([1, 1, 2])
interval_choice = left.selectbox(
    "Bar interval",
    list(INTERVALS),
    key="c_interval",
    help="auto follows the time range in the sidebar: 1 h → 1m, 24 h → 5m, 7 days → 1h, 30 days → 4h, 1 year → 1d",
)
show_markers = right.toggle(
    f"Mark liquidations ≥ {fmt_usd(settings.institutional_usd)}", key="c_markers", help="Institutional-size events"
)
if interval_choice != view.interval or show_markers != view.markers:
    view = view.with_changes(interval=interval_choice, markers=show_markers)
    set_view(view)

now = range_end_ms()
filters = (view.symbol_filter, view.exchanges, view.live_only, view.side_filter)
try:
    first_ever, _ = cached_event_bounds(url, *filters)
    start, end = view.time_range(now, first_ever)
    interval = view.bar_interval(end - start)
    if (end - start) / INTERVAL_MS[interval] > _MAX_BARS:
        wider = auto_interval(end - start)
        st.warning(f"{interval} bars over {view.range_label()} would be too many to draw; using {wider}.")
        interval = wider
    interval_ms = INTERVAL_MS[interval]
    bars = cached_liquidation_bars(url, *filters, start, end, interval_ms)
    price_exchange = next((e for e in venues.NAMES if e in view.exchanges), view.exchanges[0])
    candles = (
        cached_candles(url, price_exchange, view.symbol, start, end, interval_ms, view.live_only)
        if view.symbol_filter is not None
        else pd.DataFrame(columns=["bar", "open", "high", "low", "close", "volume"])
    )
    coverage = cached_coverage(url, view.symbol_filter, view.exchanges, view.live_only, start, end)
    markers = cached_big_liquidations(url, *filters, start, end, settings.institutional_usd) if view.markers else None
except DataUnavailable as exc:
    st.error(f"History unavailable: {plain_md(exc)}")
    st.stop()

st.caption(
    f"{plain_md(view.symbol)} · {plain_md(', '.join(view.exchanges))} · {view.range_label()} · {interval} bars · "
    f"{fmt_datetime(start)} .. {fmt_datetime(end)} · streams connected "
    + ", ".join(f"{plain_md(e)} {fmt_pct(p)}" for e, p in coverage.pct_by_exchange.items())
)
if view.symbol_filter is None:
    st.info("Price and volume need one symbol; with ALL the chart shows liquidations summed in USD over symbols.")
elif candles.empty:
    st.info(
        f"No {plain_md(price_exchange)} candles for {plain_md(view.symbol)} in this range yet "
        "(the collector stores them per minute)."
    )
if bars.empty and candles.empty:
    st.info(
        "Nothing to draw: no liquidations and no candles in this range. On a fresh install start the collector; "
        "otherwise widen the time range in the sidebar."
    )
    st.stop()

fig = liquidation_chart(
    candles,
    bars,
    gaps=coverage.merged_gaps(min_ms=interval_ms // 2),
    markers=markers,
    title=f"{view.symbol} — {price_exchange} price, liquidations on {', '.join(view.exchanges)}",
    price_label=f"{view.symbol} ({price_exchange})" if view.symbol_filter else "Price",
    min_marker_usd=settings.institutional_usd,
    x_range=(start, end),
)
st.plotly_chart(fig, config={"displaylogo": False})
st.caption(f"{lower_bound(view.exchanges)} Grey stretches: no stream coverage (missing data).".strip())

stem = f"liquidations-{view.symbol}-{interval}"
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
    download_buttons(bars, name=f"{stem}-bars", filter_description=view.describe(), key="chart-bars")
