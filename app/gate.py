"""The access gate: OIDC login when `[auth]` is configured in st.secrets, else a shared password.

With neither configured the app is open (a local install). The password comes from
`LIQ_APP_PASSWORD`; it is compared in constant time, and success is remembered in this session's
st.session_state only (never in the URL, a cookie, or anything another session can see).

Access is checked per session on every run, never through a flag shared by sessions:

- the frame (app/main.py) registers the navigation, then draws the gate (`check_access`) instead
  of the sidebar and the page while this session has not passed it;
- every page starts with `require_access()`. A server fresh from a restart serves app/pages/ in
  Streamlit's legacy multipage mode until some session has called st.navigation, and then runs,
  say, app/pages/chart.py for `/chart` alone, without the frame. Such a run renders nothing: it
  registers the app's navigation and reruns the session into the frame, on the same page with
  the same URL parameters, where the gate is drawn if needed;
- `require_session_access()` (called by `app.state.current_query()`, so also by fragments, which
  rerun without the frame) re-checks this session alone.

Downloads are buttons of pages, so a session that has not passed the gate never gets one: no
file is generated for it, and no /media/ URL exists to guess.

Password attempts are limited per session and per client address (`AttemptLimiter`): after
`FREE_ATTEMPTS` failures each further failure locks the session and the client for 2, 4, 8, ...
seconds, up to 15 minutes; a locked attempt is refused without looking at the password. The
client is the peer address, or, when the peer is loopback (a reverse proxy on this host), the last
X-Forwarded-For hop, which that proxy wrote. Behind a proxy on another host every visitor shares
its address, so the per-client limit then holds for all of them together.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import streamlit as st

from common.config import ConfigError, Settings

__all__ = [
    "ATTEMPTS",
    "AttemptLimiter",
    "check_access",
    "forget_attempts",
    "has_access",
    "in_frame",
    "require_access",
    "require_session_access",
]

FREE_ATTEMPTS = 5
_PASSED_KEY = "gate_passed"
_SESSION_KEY = "gate_session"
_REDIRECTS_KEY = "gate_redirects"
_MAX_REDIRECTS = 3
# True while the frame runs the page it resolved (set by app/main.py through `in_frame`).
_IN_FRAME: ContextVar[bool] = ContextVar("liq_in_frame", default=False)


@dataclass(frozen=True)
class _Passed:
    """What the session state holds once the password was given. A browser can send widget values
    under any id, but never an instance of this class, so the mark cannot be forged."""

    at: float


# --- Rate limiting -------------------------------------------------------------------------------


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class AttemptLimiter:
    """Failed attempts per key, in memory, thread-safe and bounded.

    `wait_s(keys)` is how long the longest lock among `keys` still lasts (0: may try). `failed`
    counts one failure for every key and returns the new wait; `succeeded` forgets the keys.
    A key idle for `forget_s` is forgotten; beyond `max_keys` the least recently failed key goes.
    """

    def __init__(
        self,
        free: int = FREE_ATTEMPTS,
        base_s: float = 2.0,
        max_s: float = 900.0,
        max_keys: int = 10_000,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free, self._base_s, self._max_s = free, base_s, max_s
        self._max_keys, self._forget_s, self._clock = max_keys, forget_s, clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def wait_s(self, keys: Sequence[str]) -> float:
        now = self._clock()
        with self._lock:
            waits = [self._records[k].locked_until - now for k in keys if k in self._records]
        return max([0.0, *waits])

    def failed(self, keys: Sequence[str]) -> float:
        now = self._clock()
        with self._lock:
            for key in keys:
                record = self._records.pop(key, None) or _Record()
                record.failures += 1
                record.last = now
                if record.failures >= self._free:
                    lock_s = min(self._base_s * 2 ** (record.failures - self._free), self._max_s)
                    record.locked_until = max(record.locked_until, now + lock_s)
                self._records[key] = record  # most recent last
            self._prune(now)
            waits = [self._records[k].locked_until - now for k in keys if k in self._records]
        return max([0.0, *waits])

    def succeeded(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._records.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def _prune(self, now: float) -> None:
        while self._records:
            key, oldest = next(iter(self._records.items()))
            expired = now - oldest.last > self._forget_s and oldest.locked_until <= now
            if not expired and len(self._records) <= self._max_keys:
                return
            del self._records[key]


ATTEMPTS = AttemptLimiter()


def forget_attempts() -> None:
    """Forget every failed attempt (tests start from a clean slate)."""
    ATTEMPTS.clear()


def _client_address() -> str:
    """The visitor's address: the peer, or, from loopback (a local reverse proxy), the last
    X-Forwarded-For hop, which the proxy wrote itself."""
    address = st.context.ip_address
    if isinstance(address, str) and address:
        return address[:64]
    forwarded = st.context.headers.get("X-Forwarded-For")
    last = forwarded.split(",")[-1].strip() if isinstance(forwarded, str) else ""
    return last[:64] or "loopback"


def _attempt_keys() -> list[str]:
    session = st.session_state.get(_SESSION_KEY)
    if not isinstance(session, str):
        session = uuid.uuid4().hex
        st.session_state[_SESSION_KEY] = session
    return [f"session:{session}", f"client:{_client_address()}"]


# --- The check -----------------------------------------------------------------------------------


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all, or an unreadable one: treat as not configured
        return False


def _settings() -> Settings | None:
    from app.cache import get_settings

    try:
        return get_settings()
    except ConfigError:
        return None  # the frame says what is wrong; nothing is shown without settings


def has_access(settings: Settings | None = None) -> bool:
    """True when this session may see the app (draws nothing)."""
    if _oidc_configured():
        return bool(st.user.get("is_logged_in"))  # absent (not only False) before the first login
    settings = settings or _settings()
    if settings is None:
        return False
    if settings.app_password:
        return isinstance(st.session_state.get(_PASSED_KEY), _Passed)
    return True


def _oidc_gate() -> bool:
    if st.user.get("is_logged_in"):
        with st.sidebar:
            st.caption("Signed in as " + _plain(st.user.get("email") or st.user.get("name") or "user"))
            st.button("Log out", on_click=st.logout)
        return True
    st.title("Liquidation aggregator")
    st.info("Please sign in to continue.")
    st.button("Sign in", on_click=st.login, type="primary")
    return False


def _password_gate(password: str) -> bool:
    if isinstance(st.session_state.get(_PASSED_KEY), _Passed):
        return True
    st.title("Liquidation aggregator")
    with st.form("gate", clear_on_submit=True):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Enter", type="primary")
    if submitted:
        keys = _attempt_keys()
        wait = ATTEMPTS.wait_s(keys)
        if wait > 0:
            st.error(f"Too many attempts, try again in {math.ceil(wait)} s.")
            return False
        if hmac.compare_digest(given.encode(), password.encode()):
            ATTEMPTS.succeeded(keys)
            st.session_state[_PASSED_KEY] = _Passed(time.time())
            st.rerun()  # same page, same URL: the deep link opens what it names
        wait = ATTEMPTS.failed(keys)
        st.error("Wrong password.")
        if wait > 0:
            st.error(f"Too many attempts, try again in {math.ceil(wait)} s.")
    return False


def check_access(settings: Settings) -> bool:
    """True when the visitor may see the app; otherwise the gate has been drawn."""
    if _oidc_configured():
        return _oidc_gate()
    if settings.app_password:
        return _password_gate(str(settings.app_password))
    return True


def _plain(text: object) -> str:
    from app.format import plain_md

    return plain_md(text)


# --- Where it is enforced ------------------------------------------------------------------------


@contextmanager
def in_frame() -> Iterator[None]:
    """The frame runs the page inside this, after the gate: `require_access` then lets it through."""
    token = _IN_FRAME.set(True)
    try:
        yield
    finally:
        _IN_FRAME.reset(token)


def require_session_access() -> None:
    """Stop this run (or fragment run) unless this session has access. Draws no form: the frame does."""
    if not has_access():
        st.info("Please sign in on the app's main page to continue.")
        st.stop()


def require_access() -> None:
    """The first call of every page: go on only inside the frame and with access.

    Outside the frame (a legacy standalone run of the page file on a fresh server) nothing is
    drawn: the app's navigation is registered and the session reruns into the frame, same page,
    same URL parameters, where the gate is shown if this session has not passed it.
    """
    if _IN_FRAME.get():
        require_session_access()  # the frame checked already; a second look costs nothing
        st.session_state[_REDIRECTS_KEY] = 0
        return
    redirects = int(st.session_state.get(_REDIRECTS_KEY) or 0)
    if redirects >= _MAX_REDIRECTS:  # never loop: show nothing but a way back in
        st.error("This page opens through the app's frame, which did not run. Reload the page.")
        st.stop()
    st.session_state[_REDIRECTS_KEY] = redirects + 1
    from app.main import register_navigation

    register_navigation(visible=False)
    st.rerun()
