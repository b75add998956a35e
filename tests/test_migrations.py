import threading
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from db import rollups
from db.migrate import MigrationError, migrate
from tests import services
from tests.storage.helpers import ROLLUPS_EQUAL_RAW


def test_schema_is_applied_once_and_recorded(database_url: str) -> None:
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
        hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert names[0] == "migrations/0001_timescaledb.sql" and len(names) >= 7
    assert {"liquidations", "liquidations_1m", "liquidations_1h", "candles"} <= hypertables


def test_two_processes_migrating_a_new_database_at_once() -> None:
    base = services.service_env()["DATABASE_URL"]
    name = "liq_test_race_" + threading.get_native_id().__str__()
    url = base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        results: list[object] = []

        def run() -> None:
            try:
                results.append(migrate(url))
            except Exception as exc:  # collected and asserted below
                results.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not [r for r in results if isinstance(r, Exception)], results
        applied = sorted(len(r) for r in results if isinstance(r, list))
        assert applied[:2] == [0, 0] and applied[2] >= 7
    finally:
        services.drop_test_database(url)


def test_edited_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE name = 'migrations/0002_liquidations.sql'")
    try:
        with pytest.raises(MigrationError, match="0002_liquidations"):
            migrate(database_url)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE name = 'migrations/0002_liquidations.sql'")
        # re-record the real checksum without re-running the file
        from db.migrate import _DIR, _checksum

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                ("migrations/0002_liquidations.sql", _checksum(_DIR / "migrations" / "0002_liquidations.sql")),
            )


def test_reader_role_can_read_but_not_write(database_url: str) -> None:
    from common.config import reader_url

    with psycopg.connect(reader_url(database_url, "")) as conn:
        conn.execute("SELECT count(*) FROM liquidations").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM liquidations")


def test_licensed_features_are_skipped_on_the_apache_edition(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        licence = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
    if licence and licence[0] == "timescale":
        assert "licensed/0001_compression.sql" in names
    else:
        assert not [n for n in names if n.startswith("licensed/")]


def test_rollups_are_indexed_by_symbol_for_coin_and_contract_reads(database_url: str) -> None:
    # Without them a coin's year scanned every symbol's rollup rows (0.8 s for BTC on the
    # whole-market year, bench/bench_pages.py); a chunk created later inherits the index.
    with psycopg.connect(database_url) as conn:
        found = {
            (table, definition.split(" USING ", 1)[1])
            for table, definition in conn.execute(
                "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename IN ('liquidations_1m', 'liquidations_1h', 'liquidations_1d')"
            )
        }
    assert ("liquidations_1m", "btree (symbol, bucket DESC)") in found
    assert (
        "liquidations_1h",
        "btree (symbol, bucket DESC) INCLUDE (exchange, side, source, events, quantity, value_usd, max_value_usd)",
    ) in found
    assert ("liquidations_1d", "btree (symbol, bucket DESC)") in found


def test_large_liquidations_have_a_partial_index_the_markers_use(database_url: str) -> None:
    # The chart's markers over a burst hour of the whole market: 70 ms scanning, 13 ms by index.
    with psycopg.connect(database_url) as conn:
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'liquidations_large_time'"
        ).fetchone() or ("",)
        assert definition.endswith('USING btree ("time" DESC) WHERE (value_usd >= (100000)::numeric)')
        # A chunk to plan over (rolled back), and a tiny table: ask whether the index can serve at all.
        conn.execute(
            "INSERT INTO liquidations (time, exchange, symbol, side, quantity, price, value_usd, raw_side, "
            "received_at, source, sampled, event_key) VALUES (now(), 'binance', 'BTCUSDT', 'LONG', 5, 60000, "
            "300000, 'SELL', now(), 'live', false, 1)"
        )
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT time FROM liquidations WHERE time >= now() - interval '1 hour' AND value_usd >= %s",
                (250_000,),
            )
        )
        assert "liquidations_large_time" in plan, plan
        conn.rollback()


def test_upgrade_builds_the_new_rollups_from_the_stored_hours() -> None:
    # A database with history from before 0015/0016 (and 0018): its raw rows and its minute and hour
    # rollups, and neither the daily nor the market rollup. Migrating builds both from the hours,
    # equal to what the raw rows give.
    url = services.create_test_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO liquidations (time, exchange, symbol, side, quantity, price, value_usd, raw_side,
                                             received_at, source, sampled, event_key)
                   SELECT timestamptz '2026-03-01 00:00:00+00' + i * interval '97 seconds',
                          (ARRAY['binance', 'bybit'])[1 + i % 2], (ARRAY['BTCUSDT', 'ETHUSDT', 'SOLUSDT'])[1 + i % 3],
                          (ARRAY['LONG', 'SHORT'])[1 + i % 5 / 3], 1 + i % 7, 100 + i % 13, (1 + i % 7) * (100 + i % 13),
                          'SELL', now(), (ARRAY['live', 'live', 'replay'])[1 + i % 3], false, i
                   FROM generate_series(1, 8000) AS i"""
            )
            for table, width in rollups.SYMBOL_ROLLUPS[:2]:  # minutes and hours, as before the upgrade
                conn.execute(
                    rollups.symbol_rollup(table, width),
                    (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
                )
            conn.execute("DROP VIEW liquidations_1h_all, liquidations_1d_all, liquidations_market_1h_all")
            conn.execute("DROP FUNCTION rollup_line()")
            for table in ("liquidations_1d", "liquidations_market_1h", "rollup_fold"):  # hypertables: one by one
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
            conn.execute(
                "DELETE FROM schema_migrations WHERE name IN ('migrations/0015_market_rollup.sql', "
                "'migrations/0016_daily_rollup.sql', 'migrations/0018_folded_rollups.sql')"
            )
        assert migrate(url) == [
            "migrations/0015_market_rollup.sql",
            "migrations/0016_daily_rollup.sql",
            "migrations/0018_folded_rollups.sql",
        ]
        with psycopg.connect(url) as conn:
            market = conn.execute(
                "SELECT bucket, exchange, side, source, events, value_usd, max_value_usd FROM liquidations_market_1h "
                "ORDER BY 1, 2, 3, 4"
            ).fetchall()
            assert (
                market
                == conn.execute(
                    "SELECT time_bucket('1 hour', time), exchange, side, source, count(*), sum(value_usd), max(value_usd) "
                    "FROM liquidations GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
                ).fetchall()
            )
            daily = conn.execute(
                "SELECT bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd "
                "FROM liquidations_1d ORDER BY 1, 2, 3, 4, 5"
            ).fetchall()
            assert (
                daily
                == conn.execute(
                    "SELECT time_bucket('1 day', time), exchange, symbol, side, source, count(*), sum(quantity), "
                    "sum(value_usd), max(value_usd) FROM liquidations GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
                ).fetchall()
            )
            assert len(daily) > 12 and sum(r[5] for r in daily) == 8000  # nine days, every row once
    finally:
        services.drop_test_database(url)


def test_upgrade_to_folded_rollups_keeps_every_tier_equal_to_the_raw_rows() -> None:
    # A database from before 0018 kept every tier exact, the open hour and today's row too. After
    # the upgrade the fold's line is this hour: the views take it from the minutes, and today's
    # day row must no longer hold it (else it would count twice).
    url = services.create_test_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO liquidations (time, exchange, symbol, side, quantity, price, value_usd, raw_side,
                                             received_at, source, sampled, event_key)
                   SELECT now() - i * interval '37 seconds',
                          (ARRAY['binance', 'bybit'])[1 + i % 2], (ARRAY['BTCUSDT', 'ETHUSDT', 'SOLUSDT'])[1 + i % 3],
                          (ARRAY['LONG', 'SHORT'])[1 + i % 5 / 3], 1 + i % 7, 100 + i % 13, (1 + i % 7) * (100 + i % 13),
                          'SELL', now(), 'live', false, i
                   FROM generate_series(0, 3000) AS i"""  # the last 31 hours, up to now
            )
            conn.execute("UPDATE rollup_fold SET folded_through = '2100-01-01 00:00+00'")  # every tier, as before
            rollups.rebuild(conn, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
            conn.execute("DROP VIEW liquidations_1h_all, liquidations_1d_all, liquidations_market_1h_all")
            conn.execute("DROP FUNCTION rollup_line()")
            conn.execute("DROP TABLE rollup_fold")
            conn.execute("DELETE FROM schema_migrations WHERE name = 'migrations/0018_folded_rollups.sql'")
        assert migrate(url) == ["migrations/0018_folded_rollups.sql"]
        with psycopg.connect(url) as conn:
            assert conn.execute(ROLLUPS_EQUAL_RAW).fetchone() == (True,)
            line, in_day_row, before_line = conn.execute(
                """SELECT (SELECT folded_through FROM rollup_fold),
                          (SELECT sum(events) FROM liquidations_1d WHERE bucket = time_bucket('1 day', now())),
                          (SELECT count(*) FROM liquidations WHERE time >= time_bucket('1 day', now())
                                                              AND time < (SELECT folded_through FROM rollup_fold))"""
            ).fetchone()
            assert line == conn.execute("SELECT time_bucket('1 hour', now())").fetchone()[0]
            assert (in_day_row or 0) == before_line
    finally:
        services.drop_test_database(url)
