"""liq_reader reaches its own database only (migration 0010), and reads no other database's tables."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from common.config import reader_url
from db.migrate import migrate
from tests import services
from tests.e2e.own_servers import OwnPostgres


def _on(url: str, dbname: str, user: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{dbname}"))


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def test_the_database_admits_liq_reader_and_no_longer_every_role(database_url: str) -> None:
    with psycopg.connect(reader_url(database_url, "")) as conn:
        conn.execute("SELECT count(*) FROM liquidations").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TEMP TABLE scratch (x int)")
    role = f"liq_test_other_app_{secrets.token_hex(3)}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        public = admin.execute("SELECT has_database_privilege('public', current_database(), 'CONNECT')").fetchone()
        assert public == (False,)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(_on(database_url, _dbname(database_url), role), connect_timeout=5).close()
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def foreign_database(database_url: str) -> Iterator[str]:
    """Another application's database on the same server, with a table of its own."""
    name = f"liq_test_foreign_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _on(database_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (name text, balance numeric)")
        conn.execute("INSERT INTO accounts VALUES ('alice', 100)")
    yield url
    services.drop_test_database(url)


def test_liq_reader_reads_no_table_of_another_database(database_url: str, foreign_database: str) -> None:
    foreign_as_reader = reader_url(foreign_database, "")
    # PostgreSQL lets every role connect to a database whose owner kept the default CONNECT for
    # PUBLIC (a migration cannot change another database), but its tables stay closed
    with psycopg.connect(foreign_as_reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM accounts")
    with psycopg.connect(foreign_database, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(_dbname(foreign_database)))
        )
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(foreign_as_reader, connect_timeout=5).close()


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.init()
    yield server
    server.destroy()


def test_on_a_server_of_its_own_liq_reader_reaches_its_database_only(own_pg: OwnPostgres) -> None:
    """The README's one-time statement for a server dedicated to the project closes the rest."""
    migrate(own_pg.url)
    admin = _on(own_pg.url, "postgres", "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE other OWNER liq")
    migrate(_on(own_pg.url, "other"))  # a second database of the project grants liq_reader on itself
    with psycopg.connect(reader_url(own_pg.url, "")) as conn:
        conn.execute("SELECT count(*) FROM liquidations").fetchone()
    # before: the default databases are open to every role
    psycopg.connect(reader_url(admin, ""), connect_timeout=5).close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
    for dbname in ("postgres", "template1"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(reader_url(_on(own_pg.url, dbname), ""), connect_timeout=5).close()
    with psycopg.connect(reader_url(own_pg.url, "")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("liq_reader",)


def test_the_provisioned_server_keeps_liq_reader_out_of_the_maintenance_databases(database_url: str) -> None:
    """scripts/services.sh revokes PUBLIC's CONNECT on postgres and template1 of the cluster it
    provisions, so on it liq_reader reaches the project's databases only."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in ("postgres", "template1"):
            row = admin.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (name,)).fetchone()
            assert row == (False,), f"PUBLIC may still connect to {name}"
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_on(reader_url(database_url, ""), "postgres"), connect_timeout=5).close()
