"""The app's entry file, a frame: page config, navigation, access gate, sidebar filters, the page.

Run: `PYTHONPATH=. streamlit run app/main.py --server.address 0.0.0.0 --server.port 8501
--server.headless true`. Pages in app/pages/ are UI only; each starts with
`app.gate.require_access()`, reads the view chosen here with `app.state.current_view()` and its
data through app/data/.

Order matters: the navigation is registered first, so the page a link names is resolved (and
stays in the address bar) before anything else; then the gate, per session (app/gate.py); only a
session that passed it gets the sidebar and its page, run inside `app.gate.in_frame()`.

The view lives in the URL (see app/state.py). On a session's first run the URL is parsed (bad
values warn and fall back to defaults); afterwards the widgets are the source of truth and every
run mirrors them back into the URL, so the address bar is always a shareable link.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from app.data.connections import DataUnavailable, get_settings
from app.data.history import cached_known_symbols
from app.format import plain_md
from app.gate import check_access, has_access, in_frame
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
from common.symbols import valid_symbol

_HERE = Path(__file__).resolve().parent
_WARNINGS_KEY = "url_warnings"
_STARTED_KEY = "frame_started"
# (file, title, url path, icon): every page, the first one the landing page. The url path is the file's stem, the name
# Streamlit's legacy multipage mode gives the same file, so a link means one page in both modes.
PAGES = (
    ("pages/market.py", "Market", "market", ":material/public:"),  # the landing page
    ("pages/live.py", "Live", "live", ":material/bolt:"),
    ("pages/accumulated.py", "Accumulated", "accumulated", ":material/functions:"),
    ("pages/chart.py", "Chart", "chart", ":material/candlestick_chart:"),
    ("pages/heatmap.py", "Heatmap", "heatmap", ":material/grid_on:"),
    ("pages/cascades.py", "Cascades", "cascades", ":material/waterfall_chart:"),
    ("pages/alerts.py", "Alerts", "alerts", ":material/notifications:"),
    ("pages/analyses.py", "Analyses", "analyses", ":material/analytics:"),
    ("pages/explorer.py", "Explorer", "explorer", ":material/table_view:"),
)


def _known_symbols(settings: Settings) -> list[str]:
    symbols = list(settings.configured_symbols)
    try:
        stored = cached_known_symbols(str(settings.app_database_url))
        symbols += [s for s in stored if s not in symbols and valid_symbol(s)]  # odd stored names are not offered
    except DataUnavailable:
        pass  # the pages say the database is down; the filters still work with the configured symbols
    return symbols


def _first_run_state(settings: Settings, symbols: list[str]) -> ViewState:
    params = {k: st.query_params.get(k, "") for k in st.query_params}
    state, warnings = parse_state(params, symbols, settings.exchanges, default_symbol=settings.default_symbol)
    st.session_state[_WARNINGS_KEY] = (state, warnings)
    return state


def _show_url_warnings(state: ViewState) -> None:
    """Refused URL values stay explained until the user changes the view."""
    parsed, warnings = st.session_state.get(_WARNINGS_KEY, (None, []))
    if parsed != state:
        st.session_state[_WARNINGS_KEY] = (None, [])
        return
    for warning in warnings:
        st.warning(plain_md(warning), icon=":material/warning:")


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
    _init_widget("f_symbol", state.symbol if state.symbol in options else options[min(1, len(options) - 1)])
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


def register_navigation(visible: bool) -> StreamlitPage:
    """Register the app's pages for this session (top bar, or hidden at the gate); return the
    page the URL names. Also called by `app.gate.require_access` from a legacy standalone run."""
    pages = [
        st.Page(_HERE / file, title=title, url_path=url, icon=icon)
        for file, title, url, icon in PAGES
        if (_HERE / file).is_file()
    ]

    def _home() -> None:
        # Streamlit serves the default page at "/" only; a hidden default that forwards to the
        # Market overview gives every page, that one included, its own path (/market) for links.
        st.switch_page(pages[0], query_params=st.query_params.to_dict())

    home = st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden")
    # The legacy page list is hidden by client.showSidebarNavigation = false (.streamlit/config.toml),
    # which hides "sidebar" navigation too: ours is in the top bar.
    return st.navigation([home, *pages], position="top" if visible else "hidden")


def main() -> None:
    st.set_page_config(page_title="Liquidation aggregator", page_icon=":material/bolt:", layout="wide")
    try:
        settings = get_settings()
    except ConfigError as exc:
        st.error(f"Configuration error: {plain_md(exc)}")
        st.stop()
    page = register_navigation(visible=has_access(settings))
    if not st.session_state.get(_STARTED_KEY):
        # A session's first run may be the legacy multipage mode running this file as its main
        # page (see app/gate.py), where widgets get other ids than in every later run: start over
        # now that the navigation is registered, so the gate's form and the filters keep their state.
        st.session_state[_STARTED_KEY] = True
        st.rerun()
    if not check_access(settings):
        st.stop()

    symbols = _known_symbols(settings)
    remember_defaults(settings.default_symbol, settings.exchanges)
    first_run = SESSION_KEY not in st.session_state
    state = _first_run_state(settings, symbols) if first_run else current_view()
    set_view(_sidebar(settings, symbols, state))
    _show_url_warnings(current_view())

    if current_view().include_nonlive:
        st.warning(
            f"This view includes {plain_md(settings.nonlive_source.upper())} data — not live.",
            icon=":material/science:",
        )
    with in_frame():
        page.run()


if __name__ == "__main__":  # streamlit (and AppTest) run the entry file as __main__
    main()
