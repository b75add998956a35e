"""Shared fixtures. Service-backed fixtures fail loudly when a service is missing (see services.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.config import Settings
from tests import services


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated TimescaleDB database for this pytest session."""
    url = services.create_test_database()
    yield url
    services.drop_test_database(url)


@pytest.fixture
def clean_db(database_url: str) -> str:
    """The session database with every table emptied before the test."""
    services.truncate_all(database_url)
    return database_url


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    client = services.redis_client()
    prefix = services.new_prefix()
    yield prefix
    services.delete_prefix(client, prefix)
    client.close()


@pytest.fixture
def sync_redis() -> Iterator[redis.Redis]:
    client = services.redis_client()
    yield client
    client.close()


@pytest.fixture
def settings(clean_db: str, redis_prefix: str, tmp_path: Path) -> Settings:
    """Settings pointing at a clean database, a private Redis prefix and a temporary spool."""
    return services.make_settings(clean_db, redis_prefix, tmp_path)
