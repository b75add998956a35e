"""Heatmap: liquidated USD (or count) by UTC day x hour of day, and the weekday x hour seasonality.

UI only: data from app.data.heatmap through app/cache.py. Every sidebar filter applies (the side
too: the page has no side selector of its own); the page's measure lives in the URL (`hm_metric`).
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.cache import db, query_range
from app.data import heatmap
from app.data.connections import DataUnavailable
from app.downloads import download_buttons
from app.format import LONG_COLOR, SHORT_COLOR, fmt_count, fmt_usd, plain_md, with_lower_bound
from app.gate import require_access
from app.query import ALL, MIN_USD_RULE, param_choice
from app.state import current_query

require_access()

METRIC_CHOICES = ("USD", "Count")
_SCALES = {ALL: "YlOrRd", "LONG": [[0, "#fff5f5"], [1, LONG_COLOR]], "SHORT": [[0, "#f2fbf6"], [1, SHORT_COLOR]]}


def _warn_bad_params() -> None:
    # Bound widgets silently drop values they do not know; say so instead.
    warnings: list[str] = []
    param_choice(st.query_params, "hm_metric", METRIC_CHOICES, "USD", warnings)
    for warning in warnings:
        st.warning(plain_md(warning), icon=":material/warning:")


def _figure(matrix: pd.DataFrame, side: str, metric: str, x_title: str, y_title: str) -> go.Figure:
    z = [[None if v is None else float(v) for v in row] for row in matrix.itertuples(index=False)]
    label = "USD" if metric == "USD" else "liquidations"
    hover = "%{y} %{x}:00 UTC<br>%{z:,.2f} " + label if metric == "USD" else "%{y} %{x}:00 UTC<br>%{z:,.1f} " + label
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{h:02d}" for h in matrix.columns],
            y=[str(i) for i in matrix.index],
            colorscale=_SCALES[side],
            hovertemplate=hover + "<extra></extra>",
            colorbar={"title": {"text": label}},
        )
    )
    fig.update_layout(
        height=max(320, 22 * len(matrix.index) + 120),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"title": x_title, "type": "category"},
        yaxis={"title": y_title, "type": "category", "autorange": "reversed"},
    )
    return fig


def main() -> None:
    st.title("Heatmap")
    _warn_bad_params()
    q = current_query()
    side = q.side_label
    metric = st.radio("Measure", METRIC_CHOICES, key="hm_metric", bind="query-params", horizontal=True) or "USD"
    try:
        start, end = query_range(q)
        hourly = db(heatmap.hourly_by_side, q, start, end)
    except DataUnavailable as exc:
        st.error(f"Cannot read the history: {plain_md(exc)}")
        return
    described = q.describe(start, end)
    note = f" · {MIN_USD_RULE}" if q.min_usd > 0 else ""
    st.caption(with_lower_bound(f"{plain_md(described)} · all times UTC{note}", q.venues))

    selected = hourly
    total_usd = sum(selected["value_usd"], Decimal(0))
    total_events = int(selected["events"].sum()) if not selected.empty else 0
    a, b = st.columns(2)
    a.metric("Liquidated USD in range", fmt_usd(total_usd))
    b.metric("Liquidations in range", fmt_count(total_events))
    if selected.empty:
        st.info(
            "No liquidations in this range for this selection. If the collector has just been started, "
            "data appears as liquidations happen; otherwise widen the range or change the filters.",
            icon=":material/hourglass_empty:",
        )
        return
    warning = heatmap.sample_warning(selected, start, end)
    if warning:
        st.warning(warning, icon=":material/info:")

    column = "value_usd" if metric == "USD" else "events"
    st.subheader("Day x hour of day (UTC)")
    matrix = heatmap.heatmap_matrix(hourly, column, start, end)
    st.plotly_chart(_figure(matrix, side, metric, "hour of day (UTC)", "day (YYYYMMDD)"), key="hm_days")
    table = matrix.copy()
    table.columns = [f"{h:02d}h" for h in table.columns]
    download_buttons(
        table.reset_index(),
        name=f"heatmap_{metric.lower()}_{side.lower()}",
        filter_description=f"{described}; {metric} per UTC day and hour",
        key="hm_days_dl",
    )

    st.subheader("Seasonality: weekday x hour of day (UTC)")
    st.caption("The mean per occurrence of each weekday-hour in the range (so a range with 3 Mondays divides by 3).")
    season = heatmap.seasonality_matrix(hourly, column, start, end)
    st.plotly_chart(_figure(season, side, metric, "hour of day (UTC)", "weekday"), key="hm_season")
    season_table = season.copy()
    season_table.columns = [f"{h:02d}h" for h in season_table.columns]
    download_buttons(
        season_table.reset_index(),
        name=f"seasonality_{metric.lower()}_{side.lower()}",
        filter_description=f"{described}; mean {metric} per weekday and UTC hour",
        key="hm_season_dl",
    )


main()
