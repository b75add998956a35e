"""A batch PostgreSQL refuses for its data loses only the rows at fault; an outage loses nothing."""

from __future__ import annotations

import random
import string
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from collector.storage.spool import Batch
from collector.storage.timescale import TimescaleWriter, outage_status
from common.events import Cascade, Side
from tests.storage.factories import candle, liq, now_ms, status
from tests.storage.helpers import ROLLUPS_EQUAL_RAW


def long_symbol(n: int = 2_800) -> str:
    """Letters that do not compress: the index entry really is ~2,800 bytes (SQLSTATE 54000)."""
    rng = random.Random(n)
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (errors.ProgramLimitExceeded("index row size 2824 exceeds btree version 4 maximum 2704"), None),
        (errors.CharacterNotInRepertoire("invalid byte sequence"), None),
        (errors.UntranslatableCharacter("unsupported Unicode escape sequence"), None),
        (errors.NumericValueOutOfRange("numeric field overflow"), None),
        (errors.UniqueViolation("duplicate key"), None),
        (errors.CheckViolation("quantity > 0"), None),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), None),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), None),
        (errors.AdminShutdown("terminating connection due to administrator command"), "unavailable"),
        (errors.CrashShutdown("crash"), "unavailable"),
        (errors.CannotConnectNow("the database system is starting up"), "unavailable"),
        (errors.TooManyConnections("too many clients"), "unavailable"),
        (errors.ConnectionFailure("connection failure"), "unavailable"),
        (errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"), "unavailable"),
        (errors.InsufficientPrivilege("permission denied for table liquidations"), "unavailable"),
        (errors.QueryCanceled("canceling statement due to statement timeout"), "timeout"),
        (psycopg.OperationalError("connection to server at 127.0.0.1 failed: Connection refused"), "unavailable"),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), "unavailable"),
        (psycopg.OperationalError("connection timeout expired"), "timeout"),
        (psycopg.InterfaceError("the connection is closed"), "unavailable"),
        (PoolTimeout("couldn't get a connection after 5.00 sec"), "unavailable"),
        (TimeoutError(), "timeout"),
    ],
)
def test_a_bad_batch_is_told_from_a_dead_database(exc: BaseException, expected: str | None) -> None:
    assert outage_status(exc) == expected


async def test_rows_at_fault_are_isolated_and_everything_else_is_committed(
    writer: TimescaleWriter, clean_db: str
) -> None:
    t = now_ms() - 120_000
    good = [liq(("bybit", "binance")[i % 2], t + i, qty=f"0.{i % 9 + 1}") for i in range(3_000)]
    nul = liq(time_ms=t + 5_000, symbol="BTC\x00USDT")
    long = liq(time_ms=t + 5_001, symbol=long_symbol())
    members = good[10:15]
    cascade = Cascade(
        77, "BTCUSDT", Side.LONG, t + 10, t + 14, 5, Decimal(5), Decimal(250_000), {"bybit": 3, "binance": 2}
    )
    bad_cascade = Cascade(78, "ETH\x00USDT", Side.LONG, t, t, 5, Decimal(1), Decimal(1), {"bybit": 5})
    bad_status = status("connected", "conn-bad")
    bad_status.symbols = ("BTC\x00USDT",)
    bad_candle = candle(open_ms=t - t % 60_000)
    bad_candle.symbol = "X\x00"
    batch = Batch(
        liquidations=[*good[:1_000], nul, *good[1_000:2_500], long, *good[2_500:]],
        candles=[candle(open_ms=t - t % 60_000), bad_candle],
        statuses=[status("connected", "conn-1", t), bad_status, status("heartbeat", "conn-1", t + 5_000)],
        cascades=[bad_cascade, cascade],
        flags=[(77, e.key, e.time_ms) for e in members] + [(77, 1, 10**17)],  # a time no database can hold
    )
    result = await writer.write(batch)

    refused = sorted((r.batch.kind(), r.sqlstate or "") for r in result.refused)
    assert refused == sorted(
        [
            ("liquidations", ""),  # the NUL is refused by psycopg before it is sent
            ("liquidations", "54000"),  # index row size exceeds btree maximum
            ("candles", ""),
            ("statuses", ""),
            ("cascades", ""),
            ("flags", ""),
        ]
    )
    long_refusal = next(r for r in result.refused if r.sqlstate == "54000")
    assert long_refusal.batch.liquidations == [long] and "index row size" in long_refusal.reason
    assert result.inserted == 3_000 and result.writes < 120  # bisection, not one write per row
    assert _scalar(clean_db, "SELECT count(*) FROM liquidations") == 3_000
    assert _scalar(clean_db, "SELECT count(*) FROM liquidations WHERE symbol <> 'BTCUSDT'") == 0
    assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True
    assert _scalar(clean_db, "SELECT sum(events) FROM liquidations_1h_all") == 3_000
    assert _scalar(clean_db, "SELECT count(*) FROM candles") == 1
    assert _scalar(clean_db, "SELECT count(*) FROM candles_1h") == 1
    assert _scalar(clean_db, "SELECT string_agg(connection_id, ',') FROM stream_coverage") == "conn-1"
    assert _scalar(clean_db, "SELECT last_seen_at = connected_at + interval '5 seconds' FROM stream_coverage")
    assert _scalar(clean_db, "SELECT string_agg(id::text, ',') FROM cascades") == "77"
    # the flags were written after the liquidations they mark, although the batch was split
    assert _scalar(clean_db, "SELECT count(*) FROM liquidations WHERE cascade_id = 77") == 5
    # writing it again changes nothing and refuses the same rows
    again = await writer.write(batch)
    assert again.inserted == 0 and len(again.refused) == 6
    assert _scalar(clean_db, ROLLUPS_EQUAL_RAW) is True


async def test_a_batch_of_only_bad_rows_sets_each_aside(writer: TimescaleWriter, clean_db: str) -> None:
    t = now_ms()
    bad = [liq(time_ms=t + i, symbol=f"B{i}\x00") for i in range(5)]
    result = await writer.write(Batch(liquidations=bad))
    assert [r.batch.liquidations for r in result.refused] == [[e] for e in bad]
    assert result.inserted == 0
    assert _scalar(clean_db, "SELECT count(*) FROM liquidations") == 0
    assert writer.status == "ok"
