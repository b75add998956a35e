"""The app's entry file, a frame: page config, navigation, access gate, sidebar filters, the page.

Run: `PYTHONPATH=. streamlit run app/main.py --server.address 0.0.0.0 --server.port 8501
--server.headless true`. Pages in app/pages/ are UI only; each starts with
`app.gate.require_access()`, reads the `Query` chosen here with `app.state.current_query()` and
its data through app/cache.py (which calls app/data/).

Order matters: the navigation is registered first, so the page a link names is resolved (and
stays in the address bar) before anything else; then the gate, per session (app/gate.py); only a
session that passed it gets the sidebar and its page, run inside `app.gate.in_frame()`.

The query lives in the URL (see app/query.py). On a session's first run the URL is parsed (bad
values warn and fall back to defaults); afterwards the widgets are the source of truth and every
run mirrors them back into the URL, so the address bar is always a shareable link. The target
picker is one searchable select box: ALL, then every coin, then every "exchange: contract"
(a thousand instruments stay one list to type into).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from app.cache import catalog, get_settings
from app.format import plain_md
from app.gate import check_access, has_access, in_frame
from app.query import (
    HOURS_CHOICES,
    SIDES,
    Catalog,
    Query,
    Target,
    all_target,
    coin_target,
    contract_target,
    default_target,
    hours_label,
    parse_query,
    refreshed,
)
from app.state import SESSION_KEY, current_query, remember_defaults, set_query
from common.config import ConfigError, Settings

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


def _first_run_query(settings: Settings, cat: Catalog) -> Query:
    params = {k: st.query_params.get(k, "") for k in st.query_params}
    q, warnings = parse_query(params, cat, settings.exchanges, default_symbol=settings.default_symbol)
    st.session_state[_WARNINGS_KEY] = (q, warnings)
    return q


def _show_url_warnings(q: Query) -> None:
    """Refused URL values stay explained until the user changes the query."""
    parsed, warnings = st.session_state.get(_WARNINGS_KEY, (None, []))
    if parsed != q:
        st.session_state[_WARNINGS_KEY] = (None, [])
        return
    for warning in warnings:
        st.warning(plain_md(warning), icon=":material/warning:")


def _init_widget(key: str, value: object) -> None:
    # Widgets are keyed and seeded from the query once; passing value= as well would fight the key.
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


def target_options(cat: Catalog, current: Target) -> list[Target]:
    """The picker's list: ALL, every coin, every venue contract (and the current target if it is
    an old link's venue symbol)."""
    options = [all_target()]
    if current.kind == "symbol":
        options.append(current)
    options += [coin_target(c, cat) for c in cat.coins()]
    options += [
        contract_target(li.exchange, li.symbol)
        for li in sorted(cat.listings, key=lambda li: (li.coin, li.exchange, li.symbol))
    ]
    return options


def _sidebar(settings: Settings, cat: Catalog, q: Query) -> Query:
    options = target_options(cat, q.target)
    if q.target not in options:
        options.insert(1, q.target)
    _init_widget("f_target", q.target)
    if st.session_state["f_target"] not in options:
        st.session_state["f_target"] = q.target
    _init_widget("f_exchanges", list(q.exchanges))
    hours_choices = list(HOURS_CHOICES)
    if q.hours is not None and q.hours not in hours_choices:
        finite = sorted([h for h in HOURS_CHOICES if h is not None] + [q.hours])
        hours_choices = [*finite, None]
    _init_widget("f_hours", q.hours)
    _init_widget("f_since", f"{q.since:%Y%m%d}" if q.since else "")
    _init_widget("f_until", f"{q.until:%Y%m%d}" if q.until else "")
    _init_widget("f_side", q.side_label)
    _init_widget("f_nonlive", q.include_nonlive)
    _init_widget("f_min_usd", int(q.min_usd))

    with st.sidebar:
        st.header("Filters")
        target = st.selectbox(
            "Coin or contract",
            options,
            key="f_target",
            format_func=lambda t: t.label,
            help="Type to search. ALL is the whole market (USD only); a coin is every contract of it on every "
            "venue; 'exchange: contract' is one venue's contract.",
        )
        exchanges = st.multiselect("Exchanges", list(settings.exchanges), key="f_exchanges")
        if not exchanges:
            st.caption("No exchange selected: showing all.")
        hours = st.select_slider("Time range", hours_choices, key="f_hours", format_func=hours_label)
        with st.expander("Custom dates (UTC, YYYYMMDD)", expanded=bool(q.since)):
            since_raw = st.text_input("Since", key="f_since", placeholder="20260101", max_chars=8)
            until_raw = st.text_input("Until (inclusive)", key="f_until", placeholder="20260131", max_chars=8)
        side = st.selectbox("Side", list(SIDES), key="f_side")
        include_nonlive = st.toggle(
            "Include non-live data", key="f_nonlive", help="Replay and test data are hidden unless this is on."
        )
        min_usd = st.number_input(
            "Minimum size (USD)",
            min_value=0,
            max_value=10**12,
            step=10_000,
            key="f_min_usd",
            help="Single liquidations and cascades smaller than this are left out of lists; totals count every size.",
        )

    since = _parse_day_input(since_raw)
    until = _parse_day_input(until_raw) if since else None
    if since_raw.strip() and since is None:
        st.sidebar.warning("Since must be a date as YYYYMMDD; ignored.")
    if until is not None and since is not None and until < since:
        st.sidebar.warning("Until is before since; ignored.")
        until = None
    return q.with_changes(
        target=target if isinstance(target, Target) else q.target,
        exchanges=tuple(exchanges) or settings.exchanges,
        hours=hours,
        since=since,
        until=until,
        side=None if side == "ALL" else side,
        include_nonlive=include_nonlive,
        min_usd=Decimal(int(min_usd or 0)),
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

    cat = catalog()
    remember_defaults(default_target(settings.default_symbol, cat, settings.exchanges), settings.exchanges)
    first_run = SESSION_KEY not in st.session_state
    q = _first_run_query(settings, cat) if first_run else current_query()
    q = _sidebar(settings, cat, q)
    set_query(q.with_changes(target=refreshed(q.target, cat, settings.exchanges)))
    _show_url_warnings(current_query())

    if current_query().include_nonlive:
        st.warning(
            f"This view includes {plain_md(settings.nonlive_source.upper())} data — not live.",
            icon=":material/science:",
        )
    with in_frame():
        page.run()


if __name__ == "__main__":  # streamlit (and AppTest) run the entry file as __main__
    main()
