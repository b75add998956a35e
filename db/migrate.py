"""Apply the schema: `python -m db.migrate` (the collector also runs this at start).

Files in `db/migrations/` run in name order, each once, each in its own transaction, and are
recorded in `schema_migrations` with a checksum (an edited, already-applied file is an error:
migrations are append-only). Files in `db/licensed/` need the TimescaleDB Community licence and
run only where `timescaledb.license = 'timescale'`. A session-level advisory lock makes two
processes starting at once safe: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from common.config import ConfigError, Settings, load_settings

log = logging.getLogger("db.migrate")

_DIR = Path(__file__).resolve().parent
_LOCK_ID = 0x6C69717561676701  # "liquagg" + 1: one lock per database


class MigrationError(RuntimeError):
    """The schema in the database disagrees with the files (edited or missing migration)."""


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.sql"))


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def migrate(database_url: str, reader_password: str = "") -> list[str]:
    """Apply pending migrations; return the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       name text PRIMARY KEY,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done: dict[str, str] = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
            pending = [("migrations", p) for p in _files(_DIR / "migrations")]
            if _licence(conn) == "timescale":
                pending += [("licensed", p) for p in _files(_DIR / "licensed")]
            for folder, path in pending:
                name = f"{folder}/{path.name}"
                checksum = _checksum(path)
                if name in done:
                    if done[name] != checksum:
                        raise MigrationError(f"{name} changed after it was applied; add a new migration instead")
                    continue
                with conn.transaction():
                    conn.execute(path.read_text().encode())  # a trusted file from this repo, no parameters
                    conn.execute("INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)", (name, checksum))
                log.info("applied %s", name)
                applied_now.append(name)
            if reader_password:
                conn.execute(sql.SQL("ALTER ROLE liq_reader PASSWORD {}").format(sql.Literal(reader_password)))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def _licence(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    return (row[0] if row else None) or "apache"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings: Settings = load_settings()
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2
    try:
        applied = migrate(settings.database_url, settings.reader_password)
    except (psycopg.Error, MigrationError) as exc:
        log.error("migration failed: %s", exc)
        return 1
    log.info("schema up to date (%d applied now)", len(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main())
