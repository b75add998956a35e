"""The app's database sessions: what every page query runs under."""

from __future__ import annotations

from psycopg_pool import ConnectionPool


def test_page_sessions_have_a_deadline_utc_and_no_jit(pool: ConnectionPool) -> None:
    # JIT compiled each page aggregate for ~90 ms and never won it back (bench/bench_pages.py).
    with pool.connection() as conn:
        shown = [conn.execute(f"SHOW {name}").fetchone() for name in ("jit", "statement_timeout", "TimeZone")]
    assert shown == [("off",), ("30s",), ("UTC",)]
