import re
from decimal import Decimal

import psycopg

from collector.storage import timescale_sql as q
from collector.storage.maintenance import apply_retention
from collector.storage.spool import Batch
from collector.storage.timescale import TimescaleWriter
from collector.storage.timescale_sql import cascade_row
from common.events import Candle, Cascade, Side, ms_to_datetime
from tests.storage.factories import T0, candle, liq, now_ms, status

ROLLUP_CHECK = """
SELECT r.bucket, r.exchange, r.symbol, r.side, r.source, r.events, r.quantity, r.value_usd, r.max_value_usd
FROM {rollup} r ORDER BY 1, 2, 3, 4, 5
"""
MARKET_CHECK = """
SELECT bucket, exchange, side, source, events, value_usd, max_value_usd FROM liquidations_market_1h ORDER BY 1, 2, 3, 4
"""
RAW_MARKET = """
SELECT time_bucket('1 hour', time), exchange, side, source, count(*), sum(value_usd), max(value_usd)
FROM liquidations GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
RAW_GROUPED = """
SELECT time_bucket(%s::interval, time), exchange, symbol, side, source, count(*), sum(quantity), sum(value_usd),
       max(value_usd)
FROM liquidations GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
"""


def _rows(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


async def test_duplicates_are_stored_once_and_rollups_equal_the_raw_rows(
    writer: TimescaleWriter, clean_db: str
) -> None:
    events = [
        liq(ex, T0 + i * 7_919, side, qty=f"0.{i % 9 + 1}", price=str(60_000 + i))
        for i in range(400)
        for ex, side in [(("bybit", "binance")[i % 2], (Side.LONG, Side.SHORT)[i % 3 == 0])]
    ]
    first = Batch(liquidations=events[:250] + events[:40])  # duplicates inside one batch
    assert (await writer.write(first)).inserted == 250
    second = Batch(liquidations=events[200:] + events[:10])  # overlap with the first batch
    assert (await writer.write(second)).inserted == 150
    assert (await writer.write(second)).inserted == 0  # a replayed batch changes nothing
    assert _rows(clean_db, "SELECT count(*), sum(value_usd) FROM liquidations") == [
        (400, sum((e.value_usd for e in events), Decimal(0)))
    ]
    for rollup, width in [("liquidations_1m", "1 minute"), ("liquidations_1h", "1 hour"), ("liquidations_1d", "1 day")]:
        got = _rows(clean_db, ROLLUP_CHECK.format(rollup=rollup))
        assert got == _rows(clean_db, RAW_GROUPED, (width,))
        assert sum(int(r[5]) for r in got) == 400  # type: ignore[call-overload]
    market = _rows(clean_db, MARKET_CHECK)  # the whole market's hours: no symbol, same sums
    assert market == _rows(clean_db, RAW_MARKET)
    assert sum(int(r[4]) for r in market) == 400  # type: ignore[call-overload]


async def test_candles_upsert_by_minute(writer: TimescaleWriter, clean_db: str) -> None:
    await writer.write(
        Batch(candles=[candle(close="100"), candle(close="101"), candle(open_ms=T0 + 60_000, close="5")])
    )
    await writer.write(Batch(candles=[candle(close="102", closed=True)]))
    assert _rows(clean_db, "SELECT close, closed FROM candles ORDER BY time") == [
        (Decimal(102), True),
        (Decimal(5), False),
    ]


async def test_coverage_life_cycle_and_stale_rows_closed_at_start(writer: TimescaleWriter, clean_db: str) -> None:
    await writer.write(Batch(statuses=[status("connected", "a", T0), status("heartbeat", "a", T0 + 5_000)]))
    await writer.write(Batch(statuses=[status("heartbeat", "a", T0 + 10_000)]))
    await writer.write(Batch(statuses=[status("disconnected", "a", T0 + 12_000, "server closed 1006")]))
    await writer.write(
        Batch(statuses=[status("connected", "killed", T0 + 20_000), status("heartbeat", "killed", T0 + 25_000)])
    )
    await writer.write(Batch(statuses=[status("connected", "mine", T0 + 30_000)]))
    assert await writer.close_stale(["mine"], []) == (1, 0)
    rows = _rows(
        clean_db,
        """SELECT connection_id, extract(epoch FROM connected_at)::bigint, extract(epoch FROM last_seen_at)::bigint,
                  extract(epoch FROM disconnected_at)::bigint, reason FROM stream_coverage ORDER BY connected_at""",
    )
    s = T0 // 1000
    assert rows == [
        ("a", s, s + 12, s + 12, "server closed 1006"),
        ("killed", s + 20, s + 25, s + 25, "collector stopped"),
        ("mine", s + 30, s + 30, None, ""),
    ]


async def test_a_killed_run_s_coverage_ends_after_the_data_it_stored(writer: TimescaleWriter, clean_db: str) -> None:
    """Events stored after the last heartbeat of a killed run are inside its coverage, not in a gap."""
    await writer.write(
        Batch(statuses=[status("connected", "killed", T0 + 20_000), status("heartbeat", "killed", T0 + 25_000)])
    )
    late = [liq(time_ms=T0 + 26_000 + i * 500, received_ms=T0 + 26_004 + i * 500) for i in range(4)]
    other_venue = liq("binance", time_ms=T0 + 33_000)  # another exchange's data does not extend bybit's row
    ours = liq(time_ms=T0 + 41_000)  # received by this run (started at T0 + 40 s): not the killed one's
    await writer.write(
        Batch(liquidations=[*late, other_venue, ours], statuses=[status("connected", "mine", T0 + 40_000)])
    )
    assert await writer.close_stale(["mine"], [], before_ms=T0 + 40_000) == (1, 0)
    rows = _rows(
        clean_db,
        """SELECT connection_id, (extract(epoch FROM disconnected_at) * 1000)::bigint, reason
           FROM stream_coverage ORDER BY connected_at""",
    )
    assert rows == [("killed", T0 + 27_504, "collector stopped"), ("mine", None, "")]
    outside = _rows(
        clean_db,
        """SELECT count(*) FROM liquidations l WHERE l.exchange = 'bybit' AND l.received_at < %s AND NOT EXISTS (
               SELECT FROM stream_coverage s WHERE s.exchange = l.exchange
               AND l.time BETWEEN s.connected_at AND coalesce(s.disconnected_at, s.last_seen_at))""",
        (ms_to_datetime(T0 + 40_000),),
    )
    assert outside == [(0,)]


async def test_cascade_upsert_member_flags_and_window_read_back(writer: TimescaleWriter, clean_db: str) -> None:
    t = now_ms() - 60_000
    members = [liq(time_ms=t + i, qty="1") for i in range(5)]
    await writer.write(Batch(liquidations=members[:3]))
    cascade = Cascade(
        99,
        "BTCUSDT",
        Side.LONG,
        t,
        t + 4,
        5,
        Decimal(5),
        Decimal(250_000),
        {"bybit": 5},
        t - t % 60_000,
        Decimal(50_000),
        Decimal(49_000),
        42,
    )
    for e in members[3:]:
        e.cascade_id = 99
    flags = [(99, e.key, e.time_ms) for e in members[:3]]
    await writer.write(Batch(liquidations=members[3:], cascades=[cascade], flags=flags))
    cascade.active = False
    cascade.end_ms = t + 9
    await writer.write(Batch(cascades=[cascade]))
    assert _rows(clean_db, "SELECT count(*) FROM liquidations WHERE cascade_id = 99") == [(5,)]
    assert _rows(clean_db, "SELECT events, active, cross_exchange, exchanges, price_move_pct FROM cascades") == [
        (5, False, False, ["bybit"], Decimal("-2.000000"))
    ]
    liqs, cascades = await writer.fetch_window(t - 1)
    assert sorted(e.key for e in liqs) == sorted(e.key for e in members)
    assert {e.key: e.value_usd for e in liqs} == {e.key: e.value_usd for e in members}
    assert cascades == [cascade]
    # a killed run's active cascades are ended at the next start, this run's own are kept
    cascade.active = True
    other = Cascade(7, "ETHUSDT", Side.SHORT, t, t, 5, Decimal(1), Decimal(1), {"bybit": 5}, active=True)
    await writer.write(Batch(cascades=[cascade, other]))
    assert await writer.close_stale([], [7]) == (0, 1)
    assert _rows(clean_db, "SELECT id, active FROM cascades ORDER BY id") == [(7, True), (99, False)]


async def test_member_flags_touch_only_the_chunks_of_their_times(writer: TimescaleWriter, clean_db: str) -> None:
    """A year of history is hundreds of chunks: the flag update is planned over the flags' own."""
    t = now_ms() - 60_000
    recent, old = liq(time_ms=t), liq(time_ms=t - 100 * 86_400_000)
    await writer.write(Batch(liquidations=[recent, old]))
    chunks = _rows(clean_db, "SELECT count(*) FROM show_chunks('liquidations')")[0][0]
    assert chunks >= 2  # else the plan below proves nothing
    flags = [(5, recent.key, recent.time_ms)]
    with psycopg.connect(clean_db) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + q.FLAG_MEMBERS, q.flag_arrays(flags)))
    assert len(set(re.findall(r"_hyper_\d+_\d+_chunk", plan))) == 1, plan
    await writer.write(Batch(flags=flags))
    assert _rows(clean_db, "SELECT event_key, cascade_id FROM liquidations ORDER BY time") == [
        (old.key, None),
        (recent.key, 5),
    ]


async def test_retention_drops_old_chunks_only(writer: TimescaleWriter, clean_db: str) -> None:
    old = now_ms() - 200 * 86_400_000
    recent = now_ms() - 3_600_000
    await writer.write(
        Batch(liquidations=[liq(time_ms=old), liq(time_ms=recent)], candles=[candle(open_ms=old - old % 60_000)])
    )
    dropped = await apply_retention(clean_db, [("liquidations", 90), ("candles", 90), ("liquidations_1m", 730)])
    assert dropped["liquidations"] == 1 and dropped["candles"] == 1 and dropped["liquidations_1m"] == 0
    assert _rows(clean_db, "SELECT count(*) FROM liquidations") == [(1,)]
    assert _rows(clean_db, "SELECT count(*) FROM liquidations_1m") == [(2,)]


async def test_text_values_survive_the_array_literals(writer: TimescaleWriter, clean_db: str) -> None:
    odd = liq(source='odd "source", {x}')
    odd.raw_side = 'Bu\\y"},NULL'
    plain = liq(time_ms=T0 + 1)
    await writer.write(Batch(liquidations=[odd, plain]))
    assert _rows(clean_db, "SELECT raw_side, source, cascade_id FROM liquidations ORDER BY time") == [
        ('Bu\\y"},NULL', 'odd "source", {x}', None),
        ("Buy", "test", None),
    ]


_ROW_INSERT = """
INSERT INTO cascades_by_row (id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges,
                             events_by_exchange, cross_exchange, peak_minute, price_start, price_end,
                             price_move_pct, risk_score, active, source, usd_by_exchange)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def _odd_cascades(t: int) -> list[Cascade]:
    """Values the array literals must carry exactly: quotes, backslashes, braces, commas and
    non-ASCII in text, exponents and long fractions in numbers, no prices, no peak minute."""
    plain = Cascade(1, "BTC-USDT-PERP", Side.LONG, t, t + 60_000, 12, Decimal("1.5"), Decimal("91500.25"))
    plain.counts, plain.usd = {"binance": 4, "bybit": 8}, {"binance": Decimal("30000"), "bybit": Decimal("61500.25")}
    plain.peak_minute_ms, plain.price_start, plain.price_end, plain.risk_score = t, Decimal(61000), Decimal(60500), 77
    odd = Cascade(-(2**62), '币安人生-USDT-"PERP", {x}\\', Side.SHORT, t, t, 5, Decimal("1E+3"), Decimal("0.0000001"))
    odd.counts, odd.usd = {"gate": 5}, {"gate": Decimal("0.0000001")}
    odd.active, odd.source, odd.risk_score = False, "replay:a,b", 0
    priced = Cascade(3, "ETH-USDT-PERP", Side.LONG, t, t + 1, 6, Decimal("2"), Decimal("6000"))
    priced.counts, priced.usd = {"okx": 6}, {"okx": Decimal("6000")}
    priced.price_start, priced.price_end = Decimal("3000.123456789"), Decimal("2999.1")  # a move of 7 decimals
    return [plain, odd, priced]


async def test_cascades_stored_from_arrays_equal_the_per_row_parameters(writer: TimescaleWriter, clean_db: str) -> None:
    cascades = _odd_cascades(T0)
    await writer.write(Batch(cascades=cascades))
    with psycopg.connect(clean_db) as conn:
        conn.execute("CREATE TABLE cascades_by_row (LIKE cascades)")
        with conn.cursor() as cur:
            cur.executemany(_ROW_INSERT, [cascade_row(c) for c in cascades])
    query = "SELECT * FROM {} ORDER BY id"
    stored = _rows(clean_db, query.format("cascades"))
    assert stored == _rows(clean_db, query.format("cascades_by_row")) and len(stored) == 3
    # the upsert replaces every changing column
    cascades[0].count, cascades[0].active, cascades[0].end_ms = 13, False, T0 + 61_000
    cascades[0].usd["okx"], cascades[0].counts["okx"] = Decimal(5), 1
    await writer.write(Batch(cascades=cascades[:1]))
    with psycopg.connect(clean_db) as conn:
        conn.execute("DELETE FROM cascades_by_row WHERE id = 1")
        conn.execute(_ROW_INSERT, cascade_row(cascades[0]))
    assert _rows(clean_db, query.format("cascades")) == _rows(clean_db, query.format("cascades_by_row"))
    assert _rows(clean_db, "SELECT events, active, exchanges FROM cascades WHERE id = 1") == [
        (13, False, ["binance", "bybit", "okx"])
    ]


async def test_candle_values_survive_the_array_literals(writer: TimescaleWriter, clean_db: str) -> None:
    """Candles travel as text literals: any venue symbol, exponents and tiny numbers come back
    exactly, and candles_1h is built from them for each (venue, symbol, hour)."""
    d = Decimal
    odd = Candle(
        "gate",
        '币安人生_"USDT"\\{x},y',
        T0,
        d("1E+3"),
        d("1000.5"),
        d("0.0000001"),
        d("999"),
        d("12345678901234567890.123456789"),
        d("0"),
        True,
        T0 + 1,
        'odd "source"',
    )
    plain = Candle(
        "binance",
        "BTCUSDT",
        T0 + 3_600_000,
        d("60000.10"),
        d("60001"),
        d("59999"),
        d("60000"),
        d("1.5"),
        d("90000.15"),
        False,
        T0 + 1,
        "test",
    )
    await writer.write(Batch(candles=[odd, plain]))
    rows = _rows(
        clean_db,
        "SELECT time, exchange, symbol, open, high, low, close, volume, quote_volume, closed, source "
        "FROM candles ORDER BY time",
    )
    assert rows == [
        (
            ms_to_datetime(T0),
            "gate",
            odd.symbol,
            d(1000),
            d("1000.5"),
            d("1E-7"),
            d(999),
            d("12345678901234567890.123456789"),
            d(0),
            True,
            'odd "source"',
        ),
        (
            ms_to_datetime(T0 + 3_600_000),
            "binance",
            "BTCUSDT",
            d("60000.10"),
            d(60001),
            d(59999),
            d(60000),
            d("1.5"),
            d("90000.15"),
            False,
            "test",
        ),
    ]
    hours = _rows(clean_db, "SELECT time, exchange, symbol, open, close, minutes FROM candles_1h ORDER BY time")
    assert hours == [
        (ms_to_datetime(T0 - T0 % 3_600_000), "gate", odd.symbol, d(1000), d(999), 1),
        (ms_to_datetime(T0 + 3_600_000 - T0 % 3_600_000), "binance", "BTCUSDT", d("60000.10"), d(60000), 1),
    ]
