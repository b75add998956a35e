"""candles_1h, written by the TimescaleWriter with every candle batch, always equals the hourly
aggregate of `candles`; retention drops its chunks with the rollups."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from collector.storage.maintenance import apply_retention, retention_plan
from collector.storage.spool import Batch
from collector.storage.timescale import TimescaleWriter
from common.events import Candle
from tests.services import make_settings
from tests.storage.factories import T0, now_ms

HOUR = 3_600_000
H0 = T0 - T0 % HOUR  # the hour holding T0

HOURLY = """
SELECT time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source
FROM candles_1h ORDER BY 1, 2, 3
"""
MINUTES_GROUPED = """
SELECT time_bucket('1 hour', time), exchange, symbol, first(open, time), max(high), min(low), last(close, time),
       sum(volume), sum(quote_volume), count(*)::integer,
       CASE WHEN bool_and(source = 'live') THEN 'live' ELSE min(source) FILTER (WHERE source <> 'live') END
FROM candles GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def _minute(rng: random.Random, exchange: str, symbol: str, open_ms: int, source: str = "live") -> Candle:
    """A minute with random but consistent OHLCV (low <= open, close <= high)."""
    o = Decimal(rng.randrange(5_000_000, 6_000_000)) / 100
    c = Decimal(rng.randrange(5_000_000, 6_000_000)) / 100
    v = Decimal(rng.randrange(1, 100_000)) / 1000
    return Candle(
        exchange, symbol, open_ms, o, max(o, c) + rng.randrange(0, 50), min(o, c) - rng.randrange(0, 50), c,
        v, v * c, True, open_ms + 60_000, source,
    )  # fmt: skip


async def test_hourly_candles_equal_the_minutes_after_every_batch(writer: TimescaleWriter, clean_db: str) -> None:
    rng = random.Random(6)
    # Three hours of binance BTCUSDT, two of bybit ETHUSDT, written in batches that straddle hours.
    minutes = [_minute(rng, "binance", "BTCUSDT", H0 + i * 60_000) for i in range(180)]
    minutes += [_minute(rng, "bybit", "ETHUSDT", H0 + HOUR + i * 60_000) for i in range(120)]
    rng.shuffle(minutes)
    for start in range(0, len(minutes), 70):
        await writer.write(Batch(candles=minutes[start : start + 70]))
        assert _rows(clean_db, HOURLY) == _rows(clean_db, MINUTES_GROUPED)
    # The open minute updated three times in one batch and again later; a replayed minute turns
    # its hour non-live; a minute re-delivered unchanged changes nothing.
    open_minute = _minute(rng, "binance", "BTCUSDT", H0 + 3 * HOUR)
    ticks = [
        replace(open_minute, close=open_minute.close + i, high=open_minute.high + i, closed=False) for i in (1, 2, 3)
    ]
    await writer.write(Batch(candles=ticks))
    await writer.write(Batch(candles=[replace(open_minute, high=open_minute.high + 100, volume=Decimal("99.5"))]))
    replayed = next(m for m in minutes if m.exchange == "bybit" and m.open_ms == H0 + HOUR + 30 * 60_000)
    await writer.write(Batch(candles=[replace(replayed, close=Decimal("1"), low=Decimal("1"), source="replay")]))
    await writer.write(Batch(candles=minutes[:5]))

    got = _rows(clean_db, HOURLY)
    assert got == _rows(clean_db, MINUTES_GROUPED)
    assert len(got) == 6 and [r[9] for r in got] == [60, 60, 60, 60, 60, 1]
    by_key = {(int(r[0].timestamp() * 1000), r[1]): r for r in got}
    last_hour = by_key[(H0 + 3 * HOUR, "binance")]
    assert last_hour[4] == open_minute.high + 100 and last_hour[7] == Decimal("99.5")
    mixed = by_key[(H0 + HOUR, "bybit")]
    assert mixed[10] == "replay" and mixed[5] == Decimal(1)
    # Independently of SQL: the first binance hour's OHLCV from the Python objects.
    first_hour = sorted(
        (m for m in minutes if m.exchange == "binance" and m.open_ms < H0 + HOUR), key=lambda m: m.open_ms
    )
    assert by_key[(H0, "binance")][3:10] == (
        first_hour[0].open,
        max(m.high for m in first_hour),
        min(m.low for m in first_hour),
        first_hour[-1].close,
        sum((m.volume for m in first_hour), Decimal(0)),
        sum((m.quote_volume for m in first_hour), Decimal(0)),
        60,
    )


async def test_retention_drops_old_hourly_chunks_with_the_rollups(
    writer: TimescaleWriter, clean_db: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    old = now_ms() - 1000 * 86_400_000  # its 180-day chunk ends well before the 730-day cutoff
    recent = now_ms() - HOUR
    await writer.write(
        Batch(
            candles=[
                _minute(rng, "bybit", "BTCUSDT", old - old % 60_000),
                _minute(rng, "bybit", "BTCUSDT", recent - recent % 60_000),
            ]
        )
    )
    plan = dict(retention_plan(make_settings(clean_db, "unused:", tmp_path)))
    assert plan["candles_1h"] == plan["liquidations_1h"]
    dropped = await apply_retention(clean_db, [("candles_1h", 730)])
    assert dropped == {"candles_1h": 1}
    assert [int(r[0].timestamp() * 1000) for r in _rows(clean_db, HOURLY)] == [recent - recent % HOUR]
