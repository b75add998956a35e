"""The service freezes the start-up heap for the garbage collector while it runs, and undoes it."""

from __future__ import annotations

import gc

from common.config import Settings
from tests.storage.factories import liq, now_ms
from tests.storage.helpers import db_count, running_service, wait_until


async def test_the_heap_is_frozen_while_running_and_released_after(settings: Settings, clean_db: str) -> None:
    assert gc.get_freeze_count() == 0
    async with running_service(settings) as service:
        assert gc.get_freeze_count() > 0
        now = now_ms()
        for i in range(50):
            await service.queue.put(liq(time_ms=now - 1000 + i, qty="0.250"))
        await wait_until(lambda: db_count(clean_db) == 50, what="50 rows committed")
    assert gc.get_freeze_count() == 0
