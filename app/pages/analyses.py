"""Analyses: volume over time, LONG vs SHORT, exchange share, daily summary, cumulative volume,
liquidations by price level and an exchange comparison, each from real query results.

UI only: data from app.data.analyses through app/cache.py; every sidebar filter applies. The interval follows the sidebar (`interval` in the URL).
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app.cache import db, query_range
from app.data import analyses
from app.data.connections import DataUnavailable
from app.data.history import coverage
from app.downloads import download_buttons
from app.format import (
    LONG_SHORT_LABEL,
    SIDE_COLORS,
    fmt_count,
    fmt_pct,
    fmt_usd,
    plain_html,
    plain_md,
    with_lower_bound,
)
from app.gate import require_access
from app.query import INTERVAL_MS, MIN_USD_RULE
from app.state import current_query
from common import venues
from common.instruments import guess_instrument

require_access()

MAX_BARS = 3000  # more bars than this is slower than it is useful: the interval is widened
_LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
    "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"},  # above the plot, clear of the date ticks
    "hovermode": "x unified",
}
_TIME_AXIS = {"tickformat": "%Y%m%d\n%H:%M", "hoverformat": "%Y%m%d %H:%M UTC"}


def _interval(view_interval: str, span_ms: int) -> tuple[str, str | None]:
    chosen = view_interval
    for name, ms in INTERVAL_MS.items():
        if ms >= INTERVAL_MS[chosen] and span_ms / ms <= MAX_BARS:
            if name != chosen:
                return name, f"Interval {chosen} would draw {span_ms // INTERVAL_MS[chosen]:,} bars; using {name}."
            return name, None
    return "1d", None


def _floats(series: pd.Series) -> list[float]:
    return [float(v) for v in series]


def _by_side(series: pd.DataFrame) -> pd.DataFrame:
    """USD per bucket and side as floats, for drawing (tables and downloads keep the Decimals)."""
    floats = series.assign(usd=series["value_usd"].astype(float))
    frame = floats.pivot_table(index="bucket", columns="side", values="usd", aggfunc="sum", fill_value=0.0)
    return frame.reindex(columns=list(SIDE_COLORS), fill_value=0.0)


def _volume(series: pd.DataFrame, interval: str, described: str) -> None:
    st.subheader(f"Liquidation volume over time ({interval} bars)")
    frame = _by_side(series)
    fig = go.Figure()
    for side, color in SIDE_COLORS.items():
        fig.add_trace(go.Bar(x=frame.index, y=_floats(frame[side]), name=side, marker_color=color))
    fig.update_layout(barmode="stack", height=340, yaxis_title="USD", **_LAYOUT)
    fig.update_xaxes(**_TIME_AXIS)
    st.plotly_chart(fig, key="an_volume")
    download_buttons(series, name="volume_over_time", filter_description=described, key="an_volume_dl")

    st.subheader(LONG_SHORT_LABEL)
    area = go.Figure()
    area.add_trace(
        go.Scatter(x=frame.index, y=_floats(frame["LONG"]), name="LONG", stackgroup="s", line_color=SIDE_COLORS["LONG"])
    )
    area.add_trace(
        go.Scatter(
            x=frame.index,
            y=_floats(-frame["SHORT"]),
            name="SHORT (below)",
            stackgroup="n",
            line_color=SIDE_COLORS["SHORT"],
        )
    )
    area.update_layout(height=300, yaxis_title="USD (shorts below the axis)", **_LAYOUT)
    area.update_xaxes(**_TIME_AXIS)
    st.plotly_chart(area, key="an_longshort")

    st.subheader("Cumulative volume")
    cumulative = go.Figure()
    for side, color in SIDE_COLORS.items():
        cumulative.add_trace(go.Scatter(x=frame.index, y=_floats(frame[side].cumsum()), name=side, line_color=color))
    cumulative.add_trace(
        go.Scatter(x=frame.index, y=_floats((frame["LONG"] + frame["SHORT"]).cumsum()), name="total", line_color="#888")
    )
    cumulative.update_layout(height=300, yaxis_title="USD since the start of the range", **_LAYOUT)
    cumulative.update_xaxes(**_TIME_AXIS)
    st.plotly_chart(cumulative, key="an_cumulative")


def _market_share(series: pd.DataFrame, described: str) -> None:
    st.subheader("Exchange market share")
    floats = series.assign(usd=series["value_usd"].astype(float))
    frame = floats.pivot_table(index="bucket", columns="exchange", values="usd", aggfunc="sum", fill_value=0.0)
    fig = go.Figure()
    for exchange in frame.columns:
        fig.add_trace(
            go.Scatter(
                x=frame.index,
                y=_floats(frame[exchange]),
                name=plain_html(exchange),
                stackgroup="share",
                groupnorm="percent",
                line_color=venues.color(str(exchange)),
            )
        )
    fig.update_layout(height=300, yaxis_title="% of liquidated USD", **_LAYOUT)
    fig.update_xaxes(**_TIME_AXIS)
    st.plotly_chart(fig, key="an_share")
    shares = analyses.totals_by(series, "exchange")
    st.dataframe(
        pd.DataFrame(
            {
                "exchange": shares["exchange"],
                "liquidations": [fmt_count(int(n)) for n in shares["events"]],
                "USD": [fmt_usd(v) for v in shares["value_usd"]],
                "share": [fmt_pct(v) for v in shares["share_pct"]],
            }
        ),
        hide_index=True,
    )
    download_buttons(shares, name="exchange_share", filter_description=described, key="an_share_dl")


def _daily(daily: pd.DataFrame, described: str) -> None:
    st.subheader("Daily summary (UTC days)")
    if daily.empty:
        st.info("No whole or partial UTC day with liquidations in this range.")
        return
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=("USD liquidated", "liquidations", "long share of USD (%)", "largest single (USD)"))  # fmt: skip
    x = list(daily["day"])
    fig.add_trace(go.Bar(x=x, y=_floats(daily["value_usd"]), name="USD", marker_color="#888"), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=list(daily["events"]), name="count", marker_color="#5b8def"), row=2, col=1)
    share = [None if v is None else float(v) for v in daily["long_share_pct"]]
    fig.add_trace(go.Scatter(x=x, y=share, name="long %", line_color=SIDE_COLORS["LONG"]), row=3, col=1)
    fig.add_trace(go.Bar(x=x, y=_floats(daily["largest_usd"]), name="largest", marker_color="#b07cc6"), row=4, col=1)
    fig.update_layout(height=640, showlegend=False, margin=_LAYOUT["margin"])
    fig.update_xaxes(type="category")
    st.plotly_chart(fig, key="an_daily")
    st.dataframe(
        pd.DataFrame(
            {
                "day": daily["day"],
                "USD": [fmt_usd(v) for v in daily["value_usd"]],
                "liquidations": [fmt_count(int(n)) for n in daily["events"]],
                "long share": [fmt_pct(v) for v in daily["long_share_pct"]],
                "largest": [fmt_usd(v) for v in daily["largest_usd"]],
            }
        ),
        hide_index=True,
    )
    download_buttons(daily, name="daily_summary", filter_description=described, key="an_daily_dl")


def _price_levels(levels: pd.DataFrame, described: str) -> None:
    st.subheader("Liquidations by price level")
    st.caption("Realised prices (each minute's volume-weighted mean fill), in equal-width buckets.")
    if levels.empty:
        st.info("No liquidations to place on price levels.")
        return
    fig = go.Figure()
    for side, color in SIDE_COLORS.items():
        part = levels[levels["side"] == side]
        fig.add_trace(
            go.Bar(
                y=_floats(part["price_level"]),
                x=_floats(part["value_usd"]),
                name=side,
                orientation="h",
                marker_color=color,
            )
        )
    fig.update_layout(
        barmode="stack", height=420, xaxis_title="USD", yaxis_title="price level (bucket start)", **_LAYOUT
    )
    fig.update_layout(hovermode="y unified")
    st.plotly_chart(fig, key="an_levels")
    download_buttons(levels, name="price_levels", filter_description=described, key="an_levels_dl")


def _exchanges(summary: pd.DataFrame, timing: pd.DataFrame, described: str) -> None:
    st.subheader("Exchange comparison")
    if summary.empty:
        st.info("No liquidations to compare.")
        return
    st.dataframe(
        pd.DataFrame(
            {
                "exchange": summary["exchange"],
                "liquidations": [fmt_count(int(n)) for n in summary["events"]],
                "USD": [fmt_usd(v) for v in summary["value_usd"]],
                "average size": [fmt_usd(v) for v in summary["avg_usd"]],
                "largest": [fmt_usd(v) for v in summary["largest_usd"]],
                "long share": [fmt_pct(v) for v in summary["long_share_pct"]],
            }
        ),
        hide_index=True,
    )
    fig = go.Figure()
    for exchange, part in timing.groupby("exchange", sort=True):
        fig.add_trace(go.Scatter(x=list(part["hour"]), y=list(part["share_pct"]), name=plain_html(exchange), mode="lines+markers",
                                 line_color=venues.color(str(exchange))))  # fmt: skip
    fig.update_layout(
        height=300, xaxis_title="hour of day (UTC)", yaxis_title="% of the exchange's liquidations", **_LAYOUT
    )
    st.plotly_chart(fig, key="an_timing")
    download_buttons(summary, name="exchange_comparison", filter_description=described, key="an_exchanges_dl")


def main() -> None:
    st.title("Analyses")
    q = current_query()
    try:
        start, end = query_range(q)
        interval, note = _interval(q.bar_interval(end - start), end - start)
        series = db(analyses.volume_series, q, start, end, interval)
        covered = db(coverage, q, start, end)
    except DataUnavailable as exc:
        st.error(f"Cannot read the history: {plain_md(exc)}")
        return
    described = q.describe(start, end)
    rule = f" · {MIN_USD_RULE}" if q.min_usd > 0 else ""
    st.caption(with_lower_bound(f"{plain_md(described)} · all times UTC{rule}", q.venues))
    sides = {str(r["side"]): (r["value_usd"], r["share_pct"]) for _, r in analyses.totals_by(series, "side").iterrows()}
    total = sum(series["value_usd"], Decimal(0)) if not series.empty else Decimal(0)
    a, b, c, d = st.columns(4)
    a.metric("Liquidated USD", fmt_usd(total))
    b.metric("Liquidations", fmt_count(int(series["events"].sum()) if not series.empty else 0))
    for column, side in ((c, "LONG"), (d, "SHORT")):
        usd, share = sides.get(side, (Decimal(0), None))
        column.metric(
            f"{side} USD",
            fmt_usd(usd),
            f"{fmt_pct(share)} of USD" if share is not None else None,
            delta_color="red" if side == "LONG" else "green",
            delta_arrow="off",
        )
    st.caption(
        f"Streams connected {fmt_pct(covered.pct_all)} of the period; the rest is missing data, not a quiet market."
    )
    if series.empty:
        st.info(
            "No liquidations in this range for these filters. If the collector has just started, data appears as "
            "liquidations happen; otherwise widen the range or change the filters.",
            icon=":material/hourglass_empty:",
        )
        return
    if note:
        st.info(note)
    tabs = st.tabs(["Volume", "Exchange share", "Daily summary", "Price levels", "Exchanges"])
    with tabs[0]:
        _volume(series, interval, described)
    with tabs[1]:
        _market_share(series, described)
    with tabs[2]:
        daily_series = series if interval == "1d" else db(analyses.volume_series, q, start, end, "1d")
        _daily(analyses.daily_summary(daily_series), described)
    with tabs[3]:
        if q.is_all:
            st.info("Price levels need a coin or a contract: prices of different coins do not share an axis.")
        elif len({guess_instrument(e, s).multiplier for e, s in q.target.pairs}) > 1:
            st.info("Price levels need contracts of one price unit: this coin has multiplier contracts (1000x).")
        else:
            _price_levels(db(analyses.price_levels, q, start, end, 40), described)
    with tabs[4]:
        _exchanges(analyses.exchange_summary(series), db(analyses.exchange_timing, q, start, end), described)


main()
