"""Fixtures of the storage tests."""

from collections.abc import AsyncIterator

import pytest

from collector.storage.timescale import TimescaleWriter


@pytest.fixture
async def writer(clean_db: str) -> AsyncIterator[TimescaleWriter]:
    """The TimescaleDB writer, open on the clean session database."""
    w = TimescaleWriter(clean_db)
    await w.open()
    await w.ensure_schema()
    yield w
    await w.close()
