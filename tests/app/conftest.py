"""Fixtures shared by the analysis-page tests: the fixed 20-day dataset and a read-only pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from app.data.connections import open_pool
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import seed_history


@pytest.fixture
def seeded(settings: Settings) -> list[Liquidation]:
    return seed_history(settings.database_url)


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    p = open_pool(str(settings.app_database_url))
    yield p
    p.close()
