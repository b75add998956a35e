"""Market overview: every venue and coin over 1, 4, 12 or 24 hours (the landing page).

UI only: the figures come from app.data.market (Redis for the live hour, rollups plus raw edge
minutes beyond, exact either way) through app/cache.py. Page controls live in the URL (`window`
in hours, `feed_min` in USD); the sidebar's exchanges and sources apply, and its minimum size
raises the feed's; its target, time range and side do not (this page is always the whole market,
both sides, over its own windows), and the caption says so. Venue text is escaped.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.cache import overview
from app.data.connections import DataUnavailable
from app.data.market import FEED_ROWS, WINDOWS, MarketOverview
from app.format import (
    LONG_COLOR,
    LONG_SHORT_LABEL,
    SHORT_COLOR,
    exchange_label,
    fmt_count,
    fmt_date,
    fmt_datetime,
    fmt_pct,
    fmt_qty,
    fmt_time,
    fmt_usd,
    lower_bound,
    plain_html,
    plain_md,
    share_pct,
    side_style,
)
from app.gate import require_access
from app.market_text import change_text
from app.query import MAX_MIN_USD, now_ms, param_choice
from app.state import current_query, url_min_usd

require_access()

DEFAULT_WINDOW = 24
DEFAULT_FEED_MIN = 10_000
TREEMAP_COINS = 60
_NOT_KEPT = ("target", "symbol", "hours", "since", "until", "window", "feed_min")  # replaced by a coin link


def _mirror(name: str, value: str | None) -> None:
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


def _controls() -> tuple[int, int]:
    warnings: list[str] = []
    choices = [str(h) for h in WINDOWS]
    url_window = param_choice(st.query_params, "window", choices, str(DEFAULT_WINDOW), warnings)
    for warning in warnings:
        st.warning(plain_md(warning), icon=":material/warning:")
    left, right = st.columns([2, 1])
    with left:
        window = st.radio(
            "Window", choices, index=choices.index(url_window), format_func=lambda h: f"{h} h", horizontal=True,
            key="m_window",
        )  # fmt: skip
    url_feed_min = DEFAULT_FEED_MIN
    if "feed_min" in st.query_params:
        url_feed_min = url_min_usd("feed_min")  # a refused value warns and leaves the URL
        if "feed_min" not in st.query_params:
            url_feed_min = DEFAULT_FEED_MIN
    with right:
        feed_min = st.number_input(
            "Feed: liquidations of at least (USD)",
            min_value=0,
            max_value=MAX_MIN_USD,
            value=url_feed_min,
            step=10_000,
            key="m_feed_min",
        )
    hours = int(window or DEFAULT_WINDOW)
    _mirror("window", None if hours == DEFAULT_WINDOW else str(hours))
    _mirror("feed_min", None if int(feed_min) == DEFAULT_FEED_MIN else str(int(feed_min)))
    return hours, int(feed_min)


def _link(page: str, coin: str, hours: int) -> str:
    """The coin's page over the overview's window, the other filters carried along."""
    kept = {k: st.query_params.get(k, "") for k in st.query_params if k not in _NOT_KEPT}
    return f"/{page}?{urlencode({**kept, 'target': coin, 'hours': str(hours)})}"


def _f(x: Decimal | None) -> float | None:
    return None if x is None else float(x)


def _venue_table(o: MarketOverview) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Exchange": [exchange_label(v.exchange) for v in o.venues],
            "Events": [v.events for v in o.venues],
            "USD": [_f(v.usd) for v in o.venues],
            "Share of USD": [_f(share_pct(v.usd, o.usd)) for v in o.venues],
        }
    )


def _coin_table(o: MarketOverview, search: str) -> pd.DataFrame:
    hours = o.hours
    needle = search.strip().upper()
    rows = [c for c in o.coins if not needle or needle in c.coin.upper() or any(needle in s.upper() for s in c.symbols)]
    return pd.DataFrame(
        {
            "Coin": [c.coin for c in rows],
            "Chart": [_link("chart", c.coin, hours) for c in rows],
            "Cascades": [_link("cascades", c.coin, hours) for c in rows],
            "Longs USD": [_f(c.long_usd) for c in rows],
            "Shorts USD": [_f(c.short_usd) for c in rows],
            "Total USD": [_f(c.usd) for c in rows],
            "Share of market": [_f(share_pct(c.usd, o.usd)) for c in rows],
            "Largest USD": [_f(c.largest_usd) for c in rows],
            "Previous USD": [_f(c.previous_usd) for c in rows],
            "Change": [change_text(c.usd, c.previous_usd) for c in rows],
            "Events": [c.events for c in rows],
            "Symbols": [", ".join(c.symbols) for c in rows],
        }
    )


_USD = st.column_config.NumberColumn(format="dollar")
_PCT = st.column_config.NumberColumn(format="%.1f%%")
COIN_COLUMNS = {
    "Longs USD": _USD,
    "Shorts USD": _USD,
    "Total USD": _USD,
    "Share of market": _PCT,
    "Largest USD": _USD,
    "Previous USD": _USD,
    "Chart": st.column_config.LinkColumn("Chart", display_text="chart"),
    "Cascades": st.column_config.LinkColumn("Cascades", display_text="cascades"),
}


def _feed_table(o: MarketOverview) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Date": [fmt_date(r.time_ms) for r in o.feed],
            "Time (UTC)": [fmt_time(r.time_ms) for r in o.feed],
            "Exchange": [r.exchange for r in o.feed],
            "Symbol": [r.symbol for r in o.feed],
            "Side": [r.side for r in o.feed],
            "Amount (base)": [fmt_qty(r.quantity) for r in o.feed],
            "USD Value": [fmt_usd(r.value_usd) for r in o.feed],
        },
        columns=["Date", "Time (UTC)", "Exchange", "Symbol", "Side", "Amount (base)", "USD Value"],
    )


def _treemap(o: MarketOverview) -> go.Figure:
    coins = o.coins[:TREEMAP_COINS]
    labels = [plain_html(c.coin) for c in coins]
    fig = go.Figure(
        go.Treemap(
            labels=labels,
            parents=[""] * len(coins),
            values=[float(c.usd) for c in coins],
            customdata=[[fmt_usd(c.usd), fmt_usd(c.long_usd), fmt_usd(c.short_usd)] for c in coins],
            marker={
                "colors": [float(c.long_share) for c in coins],
                "colorscale": [[0, SHORT_COLOR], [0.5, "#8b8d98"], [1, LONG_COLOR]],
                "cmin": 0,
                "cmax": 1,
                "colorbar": {"title": {"text": "long share"}, "tickformat": ".0%"},
            },
            hovertemplate="%{label}<br>%{customdata[0]}<br>longs %{customdata[1]}<br>shorts %{customdata[2]}"
            "<extra></extra>",
            texttemplate="%{label}<br>%{customdata[0]}",
        )
    )
    fig.update_layout(height=520, margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig


def _panel(hours: int, feed_min: int) -> None:
    view = current_query()  # checks this session's access again (the panel refreshes alone)
    feed_min = max(feed_min, int(view.min_usd))
    try:
        o = overview(hours, now_ms(), view, Decimal(feed_min))
    except DataUnavailable as exc:
        st.error(f"Market overview unavailable: {plain_md(exc)}")
        return
    st.caption(
        f"Every symbol on {plain_md(', '.join(view.exchanges))}, last {hours} h: {fmt_datetime(o.start_ms)} .. "
        f"{fmt_datetime(o.end_ms)} · from {plain_md(o.source)} · compared with the {hours} h before · the sidebar's "
        "coin or contract, time range and side do not apply here (the overview is the whole market, both sides, "
        "over its own window); its exchanges and sources do, and its minimum size raises the feed's"
    )
    if o.coins_source != o.source:
        st.caption(f"Per coin: from {plain_md(o.coins_source)}.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Liquidations", fmt_count(o.events))
    c2.metric("USD liquidated", fmt_usd(o.usd))
    c3.metric(f"Previous {hours} h", fmt_usd(o.previous_usd), change_text(o.usd, o.previous_usd), delta_color="off")
    c4.metric("Largest single liquidation", fmt_usd(o.largest_usd) if o.largest_usd is not None else "–")
    if o.events == 0:
        st.info(
            f"No liquidations in the last {hours} h on the selected exchanges. A fresh install fills as the "
            "collector records liquidations; otherwise pick a longer window or more exchanges."
        )
        return

    st.subheader(LONG_SHORT_LABEL)
    sides = pd.DataFrame(
        {
            "Side": ["LONG", "SHORT"],
            "Events": [fmt_count(o.long.events), fmt_count(o.short.events)],
            "USD": [fmt_usd(o.long.usd), fmt_usd(o.short.usd)],
            "Share of USD": [fmt_pct(share_pct(o.long.usd, o.usd)), fmt_pct(share_pct(o.short.usd, o.usd))],
        }
    )
    st.dataframe(sides.style.map(side_style, subset=["Side"]), hide_index=True)

    st.subheader("Per exchange")
    st.dataframe(_venue_table(o), hide_index=True, column_config={"USD": _USD, "Share of USD": _PCT}, key="m_venues")
    note = lower_bound(v.exchange for v in o.venues if v.events)
    if note:
        st.caption(note)

    st.subheader("Per coin")
    search = st.text_input("Search coin or symbol", key="m_search", placeholder="BTC, PEPE, ...")
    coins = _coin_table(o, search)
    st.dataframe(coins, hide_index=True, column_config=COIN_COLUMNS, key="m_coins")
    st.caption(
        f"{fmt_count(len(coins))} of {fmt_count(len(o.coins))} coins · coins are canonical base assets summed over "
        "their contracts and venues · click a column header to sort · Change is against the previous "
        f"{hours} h ('new': nothing then) · Chart and Cascades open the coin (every contract) over this window"
    )
    st.plotly_chart(_treemap(o), key="m_treemap")
    st.caption(
        f"The {min(TREEMAP_COINS, len(o.coins))} coins with the most USD liquidated, sized by USD; "
        "red = mostly longs liquidated, green = mostly shorts."
    )

    st.subheader(f"Latest liquidations of {fmt_usd(o.feed_min_usd)} or more")
    feed = _feed_table(o)
    if feed.empty:
        st.caption(f"None of at least {fmt_usd(o.feed_min_usd)} in the last {hours} h.")
    else:
        st.dataframe(feed.style.map(side_style, subset=["Side"]), hide_index=True, key="m_feed")
        more = "" if o.feed_complete else " (the newest 10,000 liquidations were searched)"
        st.caption(f"The newest {fmt_count(len(feed))} (at most {FEED_ROWS}){more}.")


st.title("Market overview")
window_hours, feed_min_usd = _controls()
st.fragment(run_every=30 if window_hours == 1 else None)(_panel)(window_hours, feed_min_usd)
