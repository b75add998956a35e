"""The current `Query` of a Streamlit session, mirrored into the URL so a pasted link reproduces it.

app/main.py parses the URL once per session (app.query.parse_query, the one parser) and then
keeps the sidebar's choice here; pages read it with `current_query()`. Every run mirrors the
query back into the URL (our parameters only; a page's own ones stay).
"""

from __future__ import annotations

from decimal import Decimal

import streamlit as st

from app.format import plain_md
from app.query import LEGACY_PARAMS, MAX_MIN_USD, QUERY_PARAMS, Query, Target, param_usd

SESSION_KEY = "query"
_DEFAULTS_KEY = "query_defaults"


def current_query() -> Query:
    """The query the sidebar (app/main.py) settled on for this run.

    Checks this session's access first (app.gate.require_session_access): fragments rerun
    without the frame, and a page that forgot `require_access()` still shows nothing ungated.
    """
    from app.gate import require_session_access

    require_session_access()
    q = st.session_state.get(SESSION_KEY)
    return q if isinstance(q, Query) else Query()


def set_query(q: Query) -> None:
    """Make `q` current and mirror it into the URL."""
    st.session_state[SESSION_KEY] = q
    default, all_exchanges = st.session_state.get(_DEFAULTS_KEY, (None, q.exchanges))
    wanted = q.to_params(default, all_exchanges)
    for name in (*QUERY_PARAMS, *LEGACY_PARAMS):
        if name in wanted:
            if st.query_params.get(name) != wanted[name]:
                st.query_params[name] = wanted[name]
        elif name in st.query_params:
            del st.query_params[name]


def remember_defaults(default: Target, all_exchanges: tuple[str, ...]) -> None:
    st.session_state[_DEFAULTS_KEY] = (default, all_exchanges)


def url_min_usd(name: str) -> int:
    """A page's own minimum-USD URL parameter (0 .. MAX_MIN_USD); a bad value warns on the page,
    is removed from the URL, and gives 0. Not a bound widget on purpose: Streamlit's bound
    number_input crashes on values like 1e400."""
    warnings: list[str] = []
    value = param_usd({name: str(st.query_params.get(name) or "")}, name, warnings)
    for warning in warnings:
        st.warning(plain_md(warning), icon=":material/warning:")
    if warnings:
        del st.query_params[name]
    return int(value or Decimal(0)) if value is not None and value <= MAX_MIN_USD else 0
