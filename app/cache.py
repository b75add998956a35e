"""The one cache of the app: connections per process, query results for CACHE_TTL_S.

Pages never touch a pool or a client: they call `db(fn, ...)` with a data function of app/data/
(its first argument a pool) and the rest of its arguments, usually a `Query` and a range; the
result is cached by the function, the database URL and the arguments, for CACHE_TTL_S seconds,
the same step "now" is rounded to (app.query.NOW_STEP_MS), so every rerun within a step is served
from here. `live_snapshot` and `overview` do the same for the Redis-backed views. Errors are not
cached: DataUnavailable reaches the page, which says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis
import streamlit as st
from psycopg_pool import ConnectionPool

from app.data import catalog as catalog_data
from app.data import live as live_data
from app.data import market as market_data
from app.data import rows
from app.data.connections import DataUnavailable, open_pool, open_redis
from app.query import NOW_STEP_MS, Catalog, Query, now_ms
from common.config import Settings, load_settings
from common.live_view import Keys

CACHE_TTL_S = NOW_STEP_MS // 1000
P = ParamSpec("P")
T = TypeVar("T")
_OPENED: list[ConnectionPool | redis.Redis] = []


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    """load_settings() once per process."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def get_pool(url: str) -> ConnectionPool:
    """One pool per database URL per process (not cached when opening fails)."""
    pool = open_pool(url)
    _OPENED.append(pool)
    return pool


@st.cache_resource(show_spinner=False)
def get_redis(url: str, timeout_s: float | None = None) -> redis.Redis:
    """One client per Redis URL per process; the deadline defaults to settings.redis_timeout_s."""
    client = open_redis(url, get_settings().redis_timeout_s if timeout_s is None else timeout_s)
    _OPENED.append(client)
    return client


def close_all() -> None:
    """Close every pool and client opened here and forget them and every cached result (tests)."""
    while _OPENED:
        _OPENED.pop().close()
    get_pool.clear()
    get_redis.clear()
    st.cache_data.clear()


def app_pool() -> ConnectionPool:
    return get_pool(str(get_settings().app_database_url))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=2048, show_spinner=False)
def _db(url: str, module: str, name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> Any:
    fn = getattr(importlib.import_module(module), name)
    return fn(get_pool(url), *args, **dict(kwargs))


def db(fn: Callable[Concatenate[ConnectionPool, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(pool, *args, **kwargs)` on the app's database, cached for CACHE_TTL_S."""
    if not fn.__module__.startswith("app.data."):
        raise ValueError(f"{fn.__qualname__} is not a data function of app/data/")
    url = str(get_settings().app_database_url)
    result: T = _db(url, fn.__module__, fn.__qualname__, args, tuple(sorted(kwargs.items())))
    return result


@st.cache_data(ttl=CACHE_TTL_S, max_entries=16, show_spinner=False)
def _catalog(url: str, configured: tuple[tuple[str, str], ...]) -> Catalog:
    return catalog_data.load_catalog(get_pool(url), configured)


def catalog() -> Catalog:
    """Every venue symbol the sidebar can pick (the configured ones even while the database is down)."""
    settings = get_settings()
    configured = tuple((e, s) for e in settings.exchanges for s in settings.configured_symbols)
    try:
        return _catalog(str(settings.app_database_url), configured)
    except DataUnavailable:
        return catalog_data.load_catalog(None, configured)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def _snapshot(url: str, prefix: str, q: Query, now: int) -> live_data.LiveSnapshot:
    return live_data.snapshot(get_redis(url), Keys(prefix), q, now)


def live_snapshot(q: Query, now: int) -> live_data.LiveSnapshot:
    """The live 60-minute view of the query at `now` (app.query.now_ms())."""
    settings = get_settings()
    return _snapshot(str(settings.redis_url), settings.redis_prefix, q, now)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def _overview(
    db_url: str,
    redis_url: str,
    prefix: str,
    hours: int,
    now: int,
    exchanges: tuple[str, ...],
    include_nonlive: bool,
    feed_min: Decimal,
) -> market_data.MarketOverview:
    return market_data.market_overview(
        get_pool(db_url), get_redis(redis_url), prefix, hours, now, exchanges, include_nonlive, feed_min
    )


def overview(hours: int, now: int, q: Query, feed_min: Decimal) -> market_data.MarketOverview:
    """The market overview of the last `hours` at `now` on the query's venues and sources."""
    settings = get_settings()
    return _overview(
        str(settings.app_database_url),
        str(settings.redis_url),
        settings.redis_prefix,
        hours,
        now,
        q.exchanges,
        q.include_nonlive,
        feed_min,
    )


def query_range(q: Query, now: int | None = None) -> tuple[int, int]:
    """The query's [start, end) at `now` (default app.query.now_ms(), the one "now"); whole
    history starts at the query's first matching event (app.data.rows.first_event_ms)."""
    now = now_ms() if now is None else now
    return q.time_range(now, db(rows.first_event_ms, q) if q.whole_history else None)


def cascade_count(q: Query, start_ms: int, end_ms: int) -> int:
    """Cascades overlapping [start, end) (app.query.CASCADE_RULE), as every page counts them."""
    return db(rows.cascade_count, q, start_ms, end_ms)
