"""The TradingView-style chart: price candles, volume and liquidation bars on one shared time axis.

`liquidation_chart(...)` takes plain DataFrames (from app.data.history) and returns a plotly
Figure; it touches no data source, so the app page, the CLI (app/cli.py) and tests share it.
Liquidation bars follow the traders' convention: LONG liquidations red and pointing down
(negative), SHORT liquidations green and pointing up. Hover texts carry exact, formatted values.
Stretches without stream coverage are shaded grey: missing data, not a quiet market.
Text that reaches the figure from outside (the title, the price label, exchange names in hover
text) is plain text: escaped here with `plain_html`, since Plotly renders tags such as <a> and
<img> in titles and hover labels, in the app and in the HTML export alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.format import (
    LONG_COLOR,
    LONG_SHORT_LABEL,
    SHORT_COLOR,
    fmt_count,
    fmt_datetime,
    fmt_qty,
    fmt_usd,
    plain_html,
    to_utc,
)

GAP_COLOR = "#8b8d98"
_MAX_SHADED_GAPS = 400  # beyond this the browser slows down; the longest gaps are kept


def _utc(values: pd.Series) -> list[datetime]:
    return [to_utc(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for v in values]


def _floats(values: pd.Series) -> list[float]:
    return [float(v) for v in values]


def _add_candles(fig: go.Figure, candles: pd.DataFrame, price_label: str) -> None:
    x = _utc(candles["bar"])
    hover = [
        f"{fmt_datetime(t)}<br>O {fmt_usd(o)} H {fmt_usd(h)}<br>L {fmt_usd(lo)} C {fmt_usd(c)}"
        for t, o, h, lo, c in zip(x, candles["open"], candles["high"], candles["low"], candles["close"], strict=True)
    ]
    fig.add_trace(
        go.Candlestick(
            x=x,
            open=_floats(candles["open"]),
            high=_floats(candles["high"]),
            low=_floats(candles["low"]),
            close=_floats(candles["close"]),
            name=price_label,
            text=hover,
            hoverinfo="text",
            increasing_line_color="#26a69a",
            decreasing_line_color="#ef5350",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=x,
            y=_floats(candles["volume"]),
            name="Volume",
            marker_color="#7c8db5",
            hovertext=[f"{fmt_datetime(t)}<br>volume {fmt_qty(v)}" for t, v in zip(x, candles["volume"], strict=True)],
            hoverinfo="text",
            showlegend=False,
        ),
        row=2,
        col=1,
    )


def _add_liquidations(fig: go.Figure, bars: pd.DataFrame) -> None:
    for side, colour, sign in (("SHORT", SHORT_COLOR, 1), ("LONG", LONG_COLOR, -1)):
        part = bars[bars["side"] == side]
        x = _utc(part["bar"])
        fig.add_trace(
            go.Bar(
                x=x,
                y=[sign * float(v) for v in part["value_usd"]],
                name=f"{side} liquidated (USD)",
                marker_color=colour,
                hovertext=[
                    f"{fmt_datetime(t)}<br>{side} liquidated {fmt_usd(u)}<br>{fmt_count(n)} events"
                    + ("" if q is None or pd.isna(q) else f", {fmt_qty(q)} base")  # None for ALL: coins do not add up
                    for t, u, n, q in zip(x, part["value_usd"], part["events"], part["quantity"], strict=True)
                ],
                hoverinfo="text",
            ),
            row=3,
            col=1,
        )


def _add_markers(fig: go.Figure, markers: pd.DataFrame, min_usd: Decimal) -> None:
    for side, colour, symbol in (("LONG", LONG_COLOR, "triangle-down"), ("SHORT", SHORT_COLOR, "triangle-up")):
        part = markers[markers["side"] == side]
        if part.empty:
            continue
        x = _utc(part["time"])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_floats(part["price"]),
                mode="markers",
                name=f"{side} ≥ {fmt_usd(min_usd)}",
                marker={"symbol": symbol, "size": 11, "color": colour, "line": {"width": 1, "color": "#111"}},
                hovertext=[
                    f"{fmt_datetime(t)}<br>{side} {plain_html(ex)} {fmt_usd(u)}<br>{fmt_qty(q)} @ {fmt_usd(p)}"
                    for t, ex, u, q, p in zip(
                        x, part["exchange"], part["value_usd"], part["quantity"], part["price"], strict=True
                    )
                ],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )


def liquidation_chart(
    candles: pd.DataFrame,
    bars: pd.DataFrame,
    gaps: Sequence[tuple[int, int]] = (),
    markers: pd.DataFrame | None = None,
    title: str = "",
    price_label: str = "Price",
    min_marker_usd: Decimal = Decimal(0),
    x_range: tuple[int, int] | None = None,
) -> go.Figure:
    """Candles (bar, open, high, low, close, volume), liquidation bars (bar, side, events, quantity,
    value_usd), coverage gaps as (start_ms, end_ms), optional big-liquidation markers
    (time, exchange, side, quantity, price, value_usd). `title` and `price_label` are plain text."""
    title, price_label = plain_html(title), plain_html(price_label)
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.55, 0.15, 0.30],
        subplot_titles=(price_label, "Volume", LONG_SHORT_LABEL),
    )
    if not candles.empty:
        _add_candles(fig, candles, price_label)
    if not bars.empty:
        _add_liquidations(fig, bars)
    if markers is not None and not markers.empty:
        _add_markers(fig, markers, min_marker_usd)
    longest = sorted(gaps, key=lambda g: g[1] - g[0], reverse=True)[:_MAX_SHADED_GAPS]
    for start, end in longest:
        # One paper-high rectangle per gap (add_vrect would add one per subplot).
        fig.add_shape(
            type="rect",
            xref="x",
            yref="paper",
            x0=to_utc(start),
            x1=to_utc(end),
            y0=0,
            y1=1,
            fillcolor=GAP_COLOR,
            opacity=0.25,
            line_width=0,
            layer="below",
        )
    if gaps:  # one legend entry explaining the grey
        fig.add_trace(
            go.Bar(x=[None], y=[None], name="no stream coverage (missing data)", marker_color=GAP_COLOR), row=3, col=1
        )
    fig.update_layout(
        title=title,
        barmode="relative",
        height=760,
        margin={"l": 60, "r": 20, "t": 60, "b": 30},
        hovermode="x",
        legend={"orientation": "h", "y": -0.04},
        xaxis_rangeslider_visible=False,
        bargap=0.1,
    )
    fig.update_yaxes(title_text="USD", row=3, col=1, zeroline=True, zerolinecolor="#888")
    if x_range is not None:
        fig.update_xaxes(range=[to_utc(x_range[0]), to_utc(x_range[1])])
    fig.update_xaxes(tickformat="%Y%m%d %H:%M", hoverformat="%Y%m%d %H:%M:%S UTC")
    return fig


def chart_html(fig: go.Figure) -> str:
    """A standalone HTML file (plotly.js embedded: it opens offline)."""
    return str(fig.to_html(include_plotlyjs=True, full_html=True))
