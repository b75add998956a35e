"""The access gate: OIDC login when `[auth]` is configured in st.secrets, else a shared password.

With neither configured the app is open (a local install). The password comes from
`LIQ_APP_PASSWORD`; it is compared in constant time and success is remembered in the session
only (never in the URL or a cookie). No page can be reached around the gate: every page reads
`app.state.current_view()`, which calls `ensure_frame()` (re-exported here).
"""

from __future__ import annotations

import hmac

import streamlit as st

from app.state import ensure_frame
from common.config import Settings

__all__ = ["check_access", "ensure_frame"]

_OK_KEY = "gate_passed"


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all, or an unreadable one: treat as not configured
        return False


def _oidc_gate() -> bool:
    if st.user.get("is_logged_in"):  # absent (not only False) before the first login
        with st.sidebar:
            st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'user'}")
            st.button("Log out", on_click=st.logout)
        return True
    st.title("Liquidation aggregator")
    st.info("Please sign in to continue.")
    st.button("Sign in", on_click=st.login, type="primary")
    return False


def _password_gate(password: str) -> bool:
    if st.session_state.get(_OK_KEY):
        return True
    st.title("Liquidation aggregator")
    with st.form("gate"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Enter", type="primary")
    if submitted:
        if hmac.compare_digest(given.encode(), password.encode()):
            st.session_state[_OK_KEY] = True
            st.rerun()
        st.error("Wrong password.")
    return False


def check_access(settings: Settings) -> bool:
    """True when the visitor may see the app; otherwise the gate has been drawn."""
    if _oidc_configured():
        return _oidc_gate()
    if settings.app_password:
        return _password_gate(str(settings.app_password))
    return True
