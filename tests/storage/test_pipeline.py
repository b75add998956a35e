from decimal import Decimal
from pathlib import Path

import psycopg

from common.config import Settings
from common.events import Event
from tests.storage.factories import candle, liq, now_ms, status
from tests.storage.helpers import db_count, running_service, wait_until


async def test_invalid_amounts_are_dropped_alone_and_the_rest_flows(settings: Settings, clean_db: str) -> None:
    now = now_ms()
    bad = liq(time_ms=now - 10)
    bad.value_usd = Decimal(0)
    events: list[Event] = [liq(time_ms=now - 30), bad, liq(time_ms=now - 20), candle(open_ms=now - now % 60_000)]
    async with running_service(settings) as service:
        for ev in [*events, status("connected")]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == 2, what="valid rows")
        assert service.pipeline.state()["invalid_events"] == 1
        await wait_until(lambda: service.pipeline.state()["inbox"] == 0, what="inbox drained")
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM candles").fetchone() == (1,)
        # no adapter sent "disconnected": the row stays open until the next start closes it
        assert conn.execute("SELECT count(*) FROM stream_coverage WHERE disconnected_at IS NULL").fetchone() == (1,)


async def test_rejected_batch_is_set_aside_not_retried_forever(
    settings: Settings, clean_db: str, tmp_path: Path
) -> None:
    now = now_ms()
    async with running_service(settings) as service:
        huge = liq(time_ms=now - 5)
        huge.symbol = "X" * 10  # fine for the schema; the next one is not
        await service.queue.put(huge)
        await wait_until(lambda: db_count(clean_db) == 1, what="first row")
        weird = status("connected", connection_id="c" * 10)
        weird.symbols = ("\x00",)  # PostgreSQL text cannot hold NUL: the database refuses the batch
        await service.queue.put(weird)
        await wait_until(lambda: service.pipeline.state()["rejected_batches"] == 1, what="rejection")
        await service.queue.put(liq(time_ms=now - 1))
        await wait_until(lambda: db_count(clean_db) == 2, what="flow continues")
    assert "\\u0000" in (settings.spool_dir / "rejected.ndjson").read_text()
