"""The app's entry file, a frame: page config, access gate, sidebar filters, navigation.

Run: `PYTHONPATH=. streamlit run app/main.py --server.address 0.0.0.0 --server.port 8501
--server.headless true`. Pages in app/pages/ are UI only; they read the view chosen here with
`app.state.current_view()` and their data through app/data/.

The view lives in the URL (see app/state.py). On a session's first run the URL is parsed (bad
values warn and fall back to defaults); afterwards the widgets are the source of truth and every
run mirrors them back into the URL, so the address bar is always a shareable link.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import streamlit as st

from app.data.connections import DataUnavailable, get_settings
from app.data.history import cached_known_symbols
from app.gate import check_access
from app.state import (
    ALL,
    HOURS_CHOICES,
    SESSION_KEY,
    SIDES,
    ViewState,
    current_view,
    hours_label,
    parse_state,
    remember_defaults,
    set_view,
)
from common.config import ConfigError, Settings

_HERE = Path(__file__).resolve().parent
_WARNINGS_KEY = "url_warnings"
# (file, title, url path, icon): all seven pages; app2 owns the last four.
PAGES = (
    ("pages/live.py", "Live", "live", ":material/bolt:"),
    ("pages/accumulated.py", "Accumulated", "accumulated", ":material/functions:"),
    ("pages/chart.py", "Chart", "chart", ":material/candlestick_chart:"),
    ("pages/heatmap.py", "Heatmap", "heatmap", ":material/grid_on:"),
    ("pages/cascades.py", "Cascades", "cascades", ":material/waterfall_chart:"),
    ("pages/analyses.py", "Analyses", "analyses", ":material/analytics:"),
    ("pages/explorer.py", "Explorer", "explorer", ":material/table_view:"),
)


def _known_symbols(settings: Settings) -> list[str]:
    symbols = list(settings.symbols)
    try:
        symbols += [s for s in cached_known_symbols(str(settings.app_database_url)) if s not in symbols]
    except DataUnavailable:
        pass  # the pages say the database is down; the filters still work with the configured symbols
    return symbols


def _first_run_state(settings: Settings, symbols: list[str]) -> ViewState:
    params = {k: st.query_params.get(k, "") for k in st.query_params}
    state, warnings = parse_state(params, symbols, settings.exchanges, default_symbol=settings.symbols[0])
    st.session_state[_WARNINGS_KEY] = (state, warnings)
    return state


def _show_url_warnings(state: ViewState) -> None:
    """Refused URL values stay explained until the user changes the view."""
    parsed, warnings = st.session_state.get(_WARNINGS_KEY, (None, []))
    if parsed != state:
        st.session_state[_WARNINGS_KEY] = (None, [])
        return
    for warning in warnings:
        st.warning(warning, icon=":material/warning:")


def _init_widget(key: str, value: object) -> None:
    # Widgets are keyed and seeded from the view once; passing value= as well would fight the key.
    if key not in st.session_state:
        st.session_state[key] = value


def _parse_day_input(raw: str) -> date | None:
    raw = raw.strip()
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return datetime.strptime(raw, "%Y%m%d").date()
    except ValueError:
        return None


def _sidebar(settings: Settings, symbols: list[str], state: ViewState) -> ViewState:
    options = [ALL, *symbols]
    _init_widget("f_symbol", state.symbol if state.symbol in options else options[1])
    _init_widget("f_exchanges", list(state.exchanges))
    hours_choices = list(HOURS_CHOICES)
    if state.hours is not None and state.hours not in hours_choices:
        finite = sorted([h for h in HOURS_CHOICES if h is not None] + [state.hours])
        hours_choices = [*finite, None]
    _init_widget("f_hours", state.hours)
    _init_widget("f_since", f"{state.since:%Y%m%d}" if state.since else "")
    _init_widget("f_until", f"{state.until:%Y%m%d}" if state.until else "")
    _init_widget("f_side", state.side)
    _init_widget("f_nonlive", state.include_nonlive)

    with st.sidebar:
        st.header("Filters")
        symbol = st.selectbox("Symbol", options, key="f_symbol", help="ALL sums USD over every symbol.")
        exchanges = st.multiselect("Exchanges", list(settings.exchanges), key="f_exchanges")
        if not exchanges:
            st.caption("No exchange selected: showing all.")
        hours = st.select_slider("Time range", hours_choices, key="f_hours", format_func=hours_label)
        with st.expander("Custom dates (UTC, YYYYMMDD)", expanded=bool(state.since)):
            since_raw = st.text_input("Since", key="f_since", placeholder="20260101", max_chars=8)
            until_raw = st.text_input("Until (inclusive)", key="f_until", placeholder="20260131", max_chars=8)
        side = st.selectbox("Side", list(SIDES), key="f_side")
        include_nonlive = st.toggle(
            "Include non-live data", key="f_nonlive", help="Replay and test data are hidden unless this is on."
        )

    since = _parse_day_input(since_raw)
    until = _parse_day_input(until_raw) if since else None
    if since_raw.strip() and since is None:
        st.sidebar.warning("Since must be a date as YYYYMMDD; ignored.")
    if until is not None and since is not None and until < since:
        st.sidebar.warning("Until is before since; ignored.")
        until = None
    return state.with_changes(
        symbol=symbol,
        exchanges=tuple(exchanges) or settings.exchanges,
        hours=hours,
        since=since,
        until=until,
        side=side,
        include_nonlive=include_nonlive,
    )


def main() -> None:
    st.set_page_config(page_title="Liquidation aggregator", page_icon=":material/bolt:", layout="wide")
    try:
        settings = get_settings()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
    if not check_access(settings):
        st.stop()

    symbols = _known_symbols(settings)
    remember_defaults(settings.symbols[0], settings.exchanges)
    first_run = SESSION_KEY not in st.session_state
    state = _first_run_state(settings, symbols) if first_run else current_view()
    set_view(_sidebar(settings, symbols, state))
    _show_url_warnings(current_view())

    if current_view().include_nonlive:
        st.warning(f"This view includes {settings.nonlive_source.upper()} data — not live.", icon=":material/science:")
    pages = [
        st.Page(_HERE / file, title=title, url_path=url, icon=icon)
        for file, title, url, icon in PAGES
        if (_HERE / file).is_file()
    ]

    def _home() -> None:
        # Streamlit serves the default page at "/" only; a hidden default that forwards to Live
        # gives every page, Live included, its own path (/live) for shareable links.
        st.switch_page(pages[0], query_params=st.query_params.to_dict())

    home = st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden")
    st.navigation([home, *pages]).run()


if __name__ == "__main__":  # streamlit (and AppTest) run the entry file as __main__
    main()
