"""Explorer: the raw liquidations a filter selects, page by page, and downloads of all of them.

UI only: data from app.data.explorer through app/cache.py, exports from app/exports.py. Every
sidebar filter applies (the minimum size to the rows). Pages are keyset-paginated
(newest first, by time and event key), so page 5,000 costs what page 1 costs. "Download all"
streams every selected row through a server-side cursor, not just the page on screen.
The page's own control lives in the URL (`cascade_only`).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from app.cache import db, query_range
from app.data import explorer
from app.data.connections import DataUnavailable
from app.downloads import download_buttons
from app.exports import stream_download_buttons
from app.format import fmt_count, fmt_datetime, fmt_qty, fmt_usd, plain_md, with_lower_bound
from app.gate import require_access
from app.query import Query
from app.state import current_query

require_access()

Cursor = tuple[datetime, int]  # (time, event_key) of the last row of the previous page
_CURSORS = "explorer_cursors"  # session key: (filter, [page start cursors]) for Previous/Next


def _url_flag(name: str) -> bool:
    raw = str(st.query_params.get(name) or "")[:10]
    if raw in ("", "0"):
        return False
    if raw == "1":
        return True
    st.warning(f"Ignored {name}={plain_md(repr(raw))}: expected 1 or 0.", icon=":material/warning:")
    del st.query_params[name]
    return False


def _mirror(name: str, value: str | None) -> None:
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


def _shown(page: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time (UTC)": [fmt_datetime(t).removesuffix(" UTC") for t in page["time"]],
            "exchange": page["exchange"],
            "symbol": page["symbol"],
            "side": page["side"],
            "quantity": [fmt_qty(q) for q in page["quantity"]],
            "price": [fmt_usd(p).lstrip("$") for p in page["price"]],
            "USD": [fmt_usd(v) for v in page["value_usd"]],
            "source": page["source"],
            "cascade": [("" if c is None or pd.isna(c) else str(int(c))) for c in page["cascade_id"]],
        }
    )


def _page_cursors(f: tuple[Query, bool]) -> list[Cursor | None]:
    saved = st.session_state.get(_CURSORS)
    if not saved or saved[0] != f:
        first: list[Cursor | None] = [None]  # a new filter starts again at the newest row
        saved = (f, first)
        st.session_state[_CURSORS] = saved
    cursors: list[Cursor | None] = saved[1]
    return cursors


def main() -> None:
    st.title("Explorer")
    q = current_query()
    cascade_only = st.checkbox("Cascade members only", value=_url_flag("cascade_only"), key="x_cascade")
    _mirror("cascade_only", "1" if cascade_only else None)
    try:
        start, end = query_range(q)
        counted = db(explorer.explorer_count, q, start, end, cascade_only)
        cursors = _page_cursors((q, cascade_only))
        page = db(explorer.explorer_page, q, start, end, cascade_only, cursors[-1], explorer.EXPLORER_PAGE_ROWS)
    except DataUnavailable as exc:
        st.error(f"Cannot read the history: {plain_md(exc)}")
        return
    described = q.describe(start, end) + ("; cascade members only" if cascade_only else "")
    st.caption(with_lower_bound(f"{plain_md(described)} · all times UTC", q.venues))
    m1, m2 = st.columns(2)
    m1.metric("Matching liquidations", fmt_count(counted[0]) if counted else "not counted")
    m2.metric("Matching USD", fmt_usd(counted[1]) if counted else "not counted")
    if counted is None:
        st.caption(
            f"Counting a minimum-USD or cascade filter over more than {explorer.RAW_COUNT_MAX_DAYS} days would "
            "scan every raw row; the pages and the downloads below still hold every match."
        )
    if (counted is not None and counted[0] == 0) or (counted is None and page.empty and len(cursors) == 1):
        st.info(
            "No liquidation matches this filter. A fresh install fills as the collector records liquidations; "
            "otherwise widen the range, lower the minimum or include more exchanges.",
            icon=":material/hourglass_empty:",
        )
        return

    number = len(cursors)
    if counted is not None:
        pages = max(1, -(-counted[0] // explorer.EXPLORER_PAGE_ROWS))
        st.caption(f"Page {number:,} of {pages:,} · newest first · {explorer.EXPLORER_PAGE_ROWS} rows a page")
    else:
        st.caption(f"Page {number:,} · newest first · {explorer.EXPLORER_PAGE_ROWS} rows a page")
    st.dataframe(_shown(page), hide_index=True, key="x_table")
    prev_col, next_col, _ = st.columns([1, 1, 4])
    if prev_col.button("Previous", disabled=number == 1, key="x_prev"):
        cursors.pop()
        st.rerun()
    last_page = len(page) < explorer.EXPLORER_PAGE_ROWS or (counted is not None and number * len(page) >= counted[0])
    if next_col.button("Next", disabled=last_page, key="x_next"):
        last = page.iloc[-1]
        cursors.append((last["time"].to_pydatetime(), int(last["event_key"])))
        st.rerun()

    st.markdown("**Download everything this filter selects** (streamed from the database, oldest first)")
    query, params = explorer.explorer_export_query(q, start, end, cascade_only)
    stream_download_buttons(query, params, name="liquidations", filter_description=described, key="x_all_dl")
    st.markdown("**Download this page**")
    download_buttons(page, name=f"liquidations_page_{number}", filter_description=described, key="x_page_dl")


main()
