"""Cascades: a timeline, a filterable table, and one cascade's liquidations on a zoomed price chart.

UI only: data from app.data.cascades through app/cache.py. Every sidebar filter applies: target,
exchanges (a cascade counts when it involves any chosen venue), range (cascades overlapping it,
app.query.CASCADE_RULE), side, sources and minimum size (the cascade's USD). The chosen cascade
lives in the URL (`cascade`).
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.cache import db, query_range
from app.data import cascades
from app.data.connections import DataUnavailable
from app.downloads import download_buttons
from app.format import (
    SIDE_COLORS,
    fmt_count,
    fmt_datetime,
    fmt_duration,
    fmt_pct,
    fmt_qty,
    fmt_time,
    fmt_usd,
    plain_html,
    plain_md,
    share_pct,
    with_lower_bound,
)
from app.gate import require_access
from app.query import CASCADE_RULE
from app.state import current_query

require_access()


def _timeline(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    biggest = max(int(frame["events"].max()), 1)
    for side, color in SIDE_COLORS.items():
        for cross, symbol, label in ((False, "circle", "one exchange"), (True, "diamond", "cross-exchange")):
            part = frame[(frame["side"] == side) & (frame["cross_exchange"] == cross)]
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part["start_time"],
                    y=part["value_usd"].astype(float),
                    mode="markers",
                    name=f"{side} · {label}",
                    marker={
                        "color": color,
                        "symbol": symbol,
                        "size": [10 + 30 * n / biggest for n in part["events"]],
                        "line": {"width": 1, "color": "#333"},
                    },
                    customdata=list(zip(part["events"], [plain_html(s) for s in part["symbol"]], strict=True)),
                    hovertemplate="%{x|%Y%m%d %H:%M:%S} UTC<br>%{customdata[1]} $%{y:,.2f}"
                    "<br>%{customdata[0]} liquidations<extra></extra>",
                )
            )
    fig.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"title": "start (UTC)", "tickformat": "%Y%m%d\n%H:%M:%S"},
        yaxis={"title": "USD liquidated", "type": "log"},
        legend={"orientation": "h"},
    )
    return fig


def _events_text(counts: dict[str, int]) -> str:
    return " · ".join(f"{exchange} {n}" for exchange, n in sorted(counts.items()))


def _shares_text(usd: dict[str, str]) -> str:
    """Each venue's share of the cascade's USD, largest first: `okx 52.1% · binance 30.0% · gate 17.9%`."""
    values = {exchange: Decimal(v) for exchange, v in (usd or {}).items()}
    total = sum(values.values(), Decimal(0))
    if total <= 0:
        return "–"
    ordered = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return " · ".join(f"{exchange} {fmt_pct(share_pct(v, total))}" for exchange, v in ordered)


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start (UTC)": [fmt_datetime(t).removesuffix(" UTC") for t in frame["start_time"]],
            "duration": [fmt_duration(s) for s in frame["duration_s"]],
            "symbol": frame["symbol"],
            "side": frame["side"],
            "events": frame["events"],
            "events per exchange": [_events_text(c) for c in frame["events_by_exchange"]],
            "USD": [fmt_usd(v) for v in frame["value_usd"]],
            "USD share per exchange": [_shares_text(u) for u in frame["usd_by_exchange"]],
            "peak minute (UTC)": [
                fmt_time(t) if t is not None and not pd.isna(t) else "–" for t in frame["peak_minute"]
            ],
            "move during": [fmt_pct(v) for v in frame["price_move_pct"]],
            "move +15 min": [fmt_pct(v) for v in frame["move_15m_pct"]],
            "move +60 min": [fmt_pct(v) for v in frame["move_60m_pct"]],
            "risk": frame["risk_score"],
        }
    )


def _export_frame(frame: pd.DataFrame) -> pd.DataFrame:
    columns = [
        "id", "symbol", "side", "start_time", "end_time", "duration_s", "events", "events_by_exchange", "quantity",
        "value_usd", "usd_by_exchange", "peak_minute", "price_start", "price_end", "price_move_pct", "move_15m_pct", "move_60m_pct",
        "risk_score", "cross_exchange", "source",
    ]  # fmt: skip
    return frame[columns]


def _zoom_chart(members: pd.DataFrame, candles: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for exchange, part in candles.groupby("exchange", sort=True):
        fig.add_trace(
            go.Candlestick(
                x=part["time"],
                open=part["open"].astype(float),
                high=part["high"].astype(float),
                low=part["low"].astype(float),
                close=part["close"].astype(float),
                name=f"{plain_html(exchange)} 1m",
                opacity=0.6,
            )
        )
    for side, color in SIDE_COLORS.items():
        part = members[members["side"] == side]
        if part.empty:
            continue
        usd = part["value_usd"].astype(float)
        fig.add_trace(
            go.Scatter(
                x=part["time"],
                y=part["price"].astype(float),
                mode="markers",
                name=f"{side} liquidations",
                marker={"color": color, "size": 8 + 22 * usd / max(float(usd.max()), 1.0), "line": {"width": 1}},
                customdata=list(zip([plain_html(e) for e in part["exchange"]], usd, strict=True)),
                hovertemplate="%{x|%H:%M:%S} UTC %{customdata[0]}<br>price %{y:,.2f}"
                "<br>$%{customdata[1]:,.2f}<extra></extra>",
            )
        )
    fig.update_layout(
        height=420,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"title": "time (UTC)", "rangeslider": {"visible": False}, "tickformat": "%H:%M:%S"},
        yaxis={"title": "price"},
        legend={"orientation": "h"},
    )
    return fig


def _show_cascade(row: pd.Series, include_nonlive: bool) -> None:
    cascade_id = int(row["id"])
    start_ms = int(row["start_time"].timestamp() * 1000)
    end_ms = int(row["end_time"].timestamp() * 1000)
    members = db(cascades.cascade_members, cascade_id, start_ms, end_ms)
    # the cascade is named after its canonical instrument; its members name the venue symbols
    symbols = tuple(sorted(set(members["symbol"]))) if not members.empty else (str(row["symbol"]),)
    candles = db(cascades.candles_between, symbols, start_ms - 15 * 60_000, end_ms + 61 * 60_000, include_nonlive)
    st.subheader(f"{plain_md(row['symbol'])} {plain_md(row['side'])} cascade of {fmt_datetime(row['start_time'])}")
    a, b, c = st.columns(3)
    a.metric("Cascade USD", fmt_usd(row["value_usd"]))
    b.metric("Cascade liquidations", fmt_count(int(row["events"])))
    c.metric("Risk score", str(int(row["risk_score"])))
    if candles.empty:
        st.caption("No candles stored around this cascade: only its liquidations are drawn.")
    st.plotly_chart(_zoom_chart(members, candles), key="c_zoom")
    if members.empty:
        st.caption("No member liquidations are linked to this cascade in the database (cascade_id not set).")
        return
    shown = pd.DataFrame(
        {
            "time (UTC)": [fmt_datetime(t).removesuffix(" UTC") for t in members["time"]],
            "exchange": members["exchange"],
            "side": members["side"],
            "quantity": [fmt_qty(q) for q in members["quantity"]],
            "price": [fmt_usd(p).lstrip("$") for p in members["price"]],
            "USD": [fmt_usd(v) for v in members["value_usd"]],
        }
    )
    st.dataframe(shown, hide_index=True, key="c_members")
    download_buttons(
        members,
        name=f"cascade_{cascade_id}_liquidations",
        filter_description=f"members of cascade {cascade_id} ({row['symbol']} {row['side']})",
        key="c_members_dl",
    )


def _url_choice(ids: list[int]) -> int:
    # Not a bound widget: bound selectboxes put the option's label in the URL, we want the id.
    raw = str(st.query_params.get("cascade") or "")[:24]
    if not raw:
        return 0
    if raw.isdigit() and int(raw) in ids:
        return ids.index(int(raw))
    st.warning(
        f"Cascade {plain_md(repr(raw))} from the link is not in this selection; showing the newest.",
        icon=":material/warning:",
    )
    return 0


def main() -> None:
    st.title("Cascades")
    q = current_query()
    try:
        start, end = query_range(q)
        frame = db(cascades.cascades, q, start, end)
        count, usd = db(cascades.cascade_totals, q, start, end)
    except DataUnavailable as exc:
        st.error(f"Cannot read the history: {plain_md(exc)}")
        return
    described = q.describe(start, end)
    st.caption(with_lower_bound(f"{plain_md(described)} · {CASCADE_RULE} · all times UTC", q.venues))
    m1, m2 = st.columns(2)
    m1.metric("Cascades", fmt_count(count))
    m2.metric("USD in cascades", fmt_usd(usd))
    if frame.empty:
        st.info(
            "No cascades in this range for these filters. A cascade is a burst of same-side liquidations of one "
            "symbol; quiet markets have none, and a collector that is not running records none.",
            icon=":material/hourglass_empty:",
        )
        return
    if count > len(frame):
        st.caption(
            f"Timeline and table show the newest {len(frame):,} of {count:,} cascades; narrow the range for older ones."
        )
    st.plotly_chart(_timeline(frame), key="c_timeline")
    st.caption("Colour: side (LONG red, SHORT green) · size: number of liquidations · ◆ cross-exchange")
    st.dataframe(_table(frame), hide_index=True, key="c_table")
    download_buttons(
        _export_frame(frame),
        name="cascades",
        filter_description=f"{described}; {CASCADE_RULE}",
        key="c_table_dl",
    )
    ids = [int(i) for i in frame["id"]]
    labels = {
        int(r["id"]): f"{fmt_datetime(r['start_time'])} · {r['symbol']} {r['side']} · {fmt_usd(r['value_usd'])}"
        for _, r in frame.iterrows()
    }
    chosen = st.selectbox("Show a cascade", ids, index=_url_choice(ids), format_func=lambda i: labels[i], key="cascade")
    if chosen is not None:
        st.query_params["cascade"] = str(chosen)  # the link shows this cascade
        _show_cascade(frame[frame["id"] == chosen].iloc[0], q.include_nonlive)


main()
