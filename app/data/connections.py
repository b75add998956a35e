"""Settings, database pools and Redis clients for the app, opened once per process.

Plain functions, no Streamlit (the CLI and the benchmarks import them): app/cache.py keeps one
pool and one client per URL for the pages (`get_pool`, `get_redis`). Nothing connects at import time.

Errors: every failure to reach TimescaleDB or Redis (down, refused, timeout, bad credentials)
surfaces as `DataUnavailable`, whose message names the service; pages catch it and show an
st.error instead of a traceback. Programming errors (bad SQL) are not caught here. Nothing is
retried inside a page run: the pool re-checks connections on checkout, so the next rerun after a
restart of the service works again.

Public API:
    open_pool(url) -> ConnectionPool         open_redis(url, timeout_s) -> redis.Redis
    fetch_all(pool, query, params) -> list[tuple]
    fetch_df(pool, query, params) -> pandas.DataFrame (column names from the cursor)
    db_errors(), redis_errors()              map connection failures to DataUnavailable
    DataUnavailable
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import psycopg
import redis
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout
from redis.backoff import NoBackoff
from redis.retry import Retry

_POOL_OPEN_TIMEOUT_S = 5.0
_STATEMENT_TIMEOUT_MS = 30_000  # a runaway query must not hold a connection forever
# The pages' aggregates run tens to hundreds of ms: PostgreSQL's JIT spent ~90 ms compiling each of
# them (measured on the whole-market year, bench/bench_pages.py) and never won that back.
_SESSION_OPTIONS = f"-c statement_timeout={_STATEMENT_TIMEOUT_MS} -c TimeZone=UTC -c jit=off"

Query = str | sql.SQL | sql.Composed


class DataUnavailable(RuntimeError):
    """TimescaleDB or Redis cannot be reached; the message names which and why."""


def open_pool(url: str, max_size: int = 4) -> ConnectionPool:
    """An opened pool of autocommit, read-only-intent connections; raises DataUnavailable."""
    # One direct attempt first: a refused or misconfigured server fails at once with the real
    # reason, instead of the pool retrying in the background until its timeout.
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        raise DataUnavailable(f"TimescaleDB is not reachable: {exc}".strip()) from exc
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=_POOL_OPEN_TIMEOUT_S,
        check=ConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "connect_timeout": 5,
            "options": _SESSION_OPTIONS,
        },
        name="app",
    )
    try:
        pool.open(wait=True, timeout=_POOL_OPEN_TIMEOUT_S)
    except (PoolTimeout, psycopg.OperationalError) as exc:
        pool.close()
        raise DataUnavailable(f"TimescaleDB is not reachable: {exc}") from exc
    return pool


def open_redis(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A Redis client whose every call has a deadline (it connects lazily on first command).

    `timeout_s` (LIQ_REDIS_TIMEOUT_S) bounds the connect and each socket operation, and nothing is
    retried, so a Redis that hangs turns into DataUnavailable after about that long, never a hung page.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis connection failures into DataUnavailable."""
    try:
        yield
    except redis.RedisError as exc:
        raise DataUnavailable(f"Redis is not reachable: {str(exc) or type(exc).__name__}") from exc


@contextmanager
def db_errors() -> Iterator[None]:
    """Turn database connection failures into DataUnavailable."""
    try:
        yield
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise DataUnavailable(f"TimescaleDB is not reachable: {exc}") from exc


def fetch_all(pool: ConnectionPool, query: Query, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    """Run one parameterised query; rows as tuples."""
    with db_errors(), pool.connection() as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def fetch_df(pool: ConnectionPool, query: Query, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run one parameterised query; a DataFrame with the cursor's column names (empty keeps them)."""
    with db_errors(), pool.connection() as conn, conn.cursor() as cur:
        cur.execute(query, params)
        columns = [d.name for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=columns)
