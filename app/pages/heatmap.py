"""Heatmap: liquidated USD (or count) by UTC day x hour of day, and the weekday x hour seasonality.

UI only: data from app.data.heatmap. Page controls live in the URL (`hm_side`, `hm_metric`).
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.data import heatmap
from app.data.connections import DataUnavailable, get_settings
from app.data.scope import scope_for
from app.downloads import download_buttons
from app.format import LONG_COLOR, SHORT_COLOR, fmt_count, fmt_usd, plain_md, with_lower_bound
from app.gate import require_access
from app.state import current_view, param_choice

require_access()

SIDE_CHOICES = ("Both", "LONG", "SHORT")
METRIC_CHOICES = ("USD", "Count")
_SCALES = {"Both": "YlOrRd", "LONG": [[0, "#fff5f5"], [1, LONG_COLOR]], "SHORT": [[0, "#f2fbf6"], [1, SHORT_COLOR]]}


def _warn_bad_params() -> None:
    # Bound widgets silently drop values they do not know; say so instead.
    warnings: list[str] = []
    param_choice(st.query_params, "hm_side", SIDE_CHOICES, "Both", warnings)
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
    view = current_view()
    settings = get_settings()
    url = str(settings.app_database_url)
    left, right = st.columns(2)
    with left:
        side = st.radio("Side", SIDE_CHOICES, key="hm_side", bind="query-params", horizontal=True) or "Both"
    with right:
        metric = st.radio("Measure", METRIC_CHOICES, key="hm_metric", bind="query-params", horizontal=True) or "USD"
    try:
        scope = scope_for(view, url)
        hourly = heatmap.cached_hourly_by_side(url, scope)
    except DataUnavailable as exc:
        st.error(f"Cannot read the history: {plain_md(exc)}")
        return
    st.caption(with_lower_bound(f"{plain_md(scope.describe())} · all times UTC", scope.exchanges))

    side_filter = None if side == "Both" else side
    selected = hourly if side_filter is None else hourly[hourly["side"] == side_filter]
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
    warning = heatmap.sample_warning(selected, scope)
    if warning:
        st.warning(warning, icon=":material/info:")

    column = "value_usd" if metric == "USD" else "events"
    st.subheader("Day x hour of day (UTC)")
    matrix = heatmap.heatmap_matrix(hourly, side_filter, column, scope)
    st.plotly_chart(_figure(matrix, side, metric, "hour of day (UTC)", "day (YYYYMMDD)"), key="hm_days")
    table = matrix.copy()
    table.columns = [f"{h:02d}h" for h in table.columns]
    download_buttons(
        table.reset_index(),
        name=f"heatmap_{metric.lower()}_{side.lower()}",
        filter_description=f"{scope.describe()}; side {side}; {metric} per UTC day and hour",
        key="hm_days_dl",
    )

    st.subheader("Seasonality: weekday x hour of day (UTC)")
    st.caption("The mean per occurrence of each weekday-hour in the range (so a range with 3 Mondays divides by 3).")
    season = heatmap.seasonality_matrix(hourly, side_filter, column, scope)
    st.plotly_chart(_figure(season, side, metric, "hour of day (UTC)", "weekday"), key="hm_season")
    season_table = season.copy()
    season_table.columns = [f"{h:02d}h" for h in season_table.columns]
    download_buttons(
        season_table.reset_index(),
        name=f"seasonality_{metric.lower()}_{side.lower()}",
        filter_description=f"{scope.describe()}; side {side}; mean {metric} per weekday and UTC hour",
        key="hm_season_dl",
    )


main()
