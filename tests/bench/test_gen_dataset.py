"""The benchmark generator against a real TimescaleDB: a few days of two symbols with a fixed seed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from bench.gen_dataset import GenerateError, generate, main, make_config
from bench.synth import GenConfig, build_plan, generate_symbol_day, profile_for
from collector.cascades import SAMPLED_WEIGHT, cascade_id, risk_score
from common.events import Side, dedup_key
from tests import services

SYMBOLS = ("BTCUSDT", "ETHUSDT")
END = date(2025, 3, 10)
DAYS = 4
SEED = 7
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Each table's rows in a fixed order, hashed: equal fingerprints mean equal contents.
_FINGERPRINT_ORDER = {
    "liquidations": "time, event_key",
    "liquidations_1m": "bucket, exchange, symbol, side, source",
    "liquidations_1h": "bucket, exchange, symbol, side, source",
    "candles": "exchange, symbol, time",
    "candles_1h": "exchange, symbol, time",
    "cascades": "id",
    "stream_coverage": "connection_id",
}


def _config(seed: int = SEED) -> GenConfig:
    return make_config(SYMBOLS, DAYS, seed, END, "test")


def _fingerprint(url: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    with psycopg.connect(url) as conn:
        for table, order in _FINGERPRINT_ORDER.items():
            query = sql.SQL("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {})) FROM {} t").format(
                sql.SQL(order), sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            assert row is not None
            out[table] = (row[0], row[1])
    return out


def _empty(url: str) -> None:
    # tests.services.TABLES predates candles_1h: empty it here too.
    services.truncate_all(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles_1h")


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@pytest.fixture(scope="module")
def generated(database_url: str) -> tuple[str, dict[str, float], dict[str, tuple[int, str]]]:
    """One generated dataset shared by the read-only checks below (two workers)."""
    _empty(database_url)
    totals = generate(database_url, _config(), workers=2)
    return database_url, totals, _fingerprint(database_url)


def test_counts_are_realistic_and_reported(generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]]) -> None:
    url, totals, fingerprint = generated
    for table, (count, _) in fingerprint.items():
        assert totals[table] == count, table
    with psycopg.connect(url) as conn:
        per_day = dict(
            ((ex, sym), n // DAYS)
            for ex, sym, n in conn.execute("SELECT exchange, symbol, count(*) FROM liquidations GROUP BY 1, 2")
        )
        bounds = conn.execute(
            "SELECT symbol, min(low), max(high), count(*) FROM candles GROUP BY symbol ORDER BY symbol"
        ).fetchall()
        sizes = conn.execute(
            """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY value_usd::float8),
                      avg((value_usd BETWEEN 100 AND 10000)::int), max(value_usd)
               FROM liquidations"""
        ).fetchone()
    assert 3_000 <= per_day[("bybit", "BTCUSDT")] <= 20_000
    assert per_day[("binance", "BTCUSDT")] < per_day[("bybit", "BTCUSDT")]
    assert per_day[("bybit", "ETHUSDT")] < per_day[("bybit", "BTCUSDT")]
    for symbol, low, high, count in bounds:
        profile = profile_for(symbol)
        assert profile.low * 0.99 <= low and high <= profile.high * 1.01
        assert 0.97 * DAYS * 1440 * 2 <= count <= DAYS * 1440 * 2  # both venues, minus outages
    assert sizes is not None
    median, share_100_10k, largest = sizes
    assert 500 <= median <= 5_000 and share_100_10k > 0.6 and largest > 1_000_000


def test_rollups_equal_the_raw_rows(generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]]) -> None:
    url = generated[0]
    with psycopg.connect(url) as conn:
        for table, width in (("liquidations_1m", "1 minute"), ("liquidations_1h", "1 hour")):
            raw = sql.SQL(
                """SELECT time_bucket({}, time), exchange, symbol, side, source, count(*),
                          sum(quantity), sum(value_usd), max(value_usd)
                   FROM liquidations GROUP BY 1, 2, 3, 4, 5"""
            ).format(sql.Literal(width))
            rollup = sql.SQL(
                "SELECT bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd FROM {}"
            ).format(sql.Identifier(table))
            extra = conn.execute(sql.SQL("({}) EXCEPT ({})").format(rollup, raw)).fetchall()
            missing = conn.execute(sql.SQL("({}) EXCEPT ({})").format(raw, rollup)).fetchall()
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            assert not extra and not missing, table
            assert row is not None and row[0] > 0


def test_hourly_candles_equal_the_minute_candles(
    generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]],
) -> None:
    url = generated[0]
    with psycopg.connect(url) as conn:
        aggregate = """SELECT time_bucket('1 hour', time), exchange, symbol,
                              (array_agg(open ORDER BY time))[1], max(high), min(low),
                              (array_agg(close ORDER BY time DESC))[1], sum(volume), sum(quote_volume),
                              count(*)::int, min(source)
                       FROM candles GROUP BY 1, 2, 3"""
        hourly = """SELECT time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source
                    FROM candles_1h"""
        extra = conn.execute(sql.SQL("({}) EXCEPT ({})").format(sql.SQL(hourly), sql.SQL(aggregate))).fetchall()
        missing = conn.execute(sql.SQL("({}) EXCEPT ({})").format(sql.SQL(aggregate), sql.SQL(hourly))).fetchall()
        minutes = conn.execute("SELECT count(*), min(minutes), max(minutes), sum(minutes) FROM candles_1h").fetchone()
        candles = conn.execute("SELECT count(*) FROM candles").fetchone()
    assert not extra and not missing
    assert minutes is not None and candles is not None
    count, fewest, most, total = minutes
    # Four days of two symbols on two venues; outages leave some hours short of 60 minutes.
    assert 0.97 * DAYS * 24 * 4 <= count <= DAYS * 24 * 4
    assert most == 60 and fewest < 60 and total == candles[0]


def test_rows_follow_the_venue_conventions(generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]]) -> None:
    url = generated[0]
    with psycopg.connect(url) as conn:
        combos = set(conn.execute("SELECT DISTINCT exchange, side, raw_side, sampled, source FROM liquidations"))
        bad_value = conn.execute(
            "SELECT count(*) FROM liquidations WHERE value_usd <> quantity * price OR received_at <= time"
        ).fetchone()
        busiest_second = conn.execute(
            """SELECT max(n) FROM (SELECT count(*) AS n FROM liquidations WHERE exchange = 'binance'
                                   GROUP BY symbol, date_trunc('second', time)) s"""
        ).fetchone()
        bybit_crowded = conn.execute(
            """SELECT count(*) FROM (SELECT 1 FROM liquidations WHERE exchange = 'bybit'
                                     GROUP BY symbol, date_trunc('second', time) HAVING count(*) > 1) s"""
        ).fetchone()
        sample = conn.execute(
            "SELECT exchange, symbol, time, side, price, quantity, event_key FROM liquidations ORDER BY event_key LIMIT 300"
        ).fetchall()
        candles_bad = conn.execute(
            """SELECT count(*) FROM candles WHERE low > least(open, close) OR high < greatest(open, close)
                  OR NOT closed OR quote_volume <= 0 OR source <> 'test'"""
        ).fetchone()
    # Binance sends the order side (a long is closed by a SELL); Bybit the position side (Buy = long).
    assert combos == {
        ("binance", "LONG", "SELL", True, "test"),
        ("binance", "SHORT", "BUY", True, "test"),
        ("bybit", "LONG", "Buy", False, "test"),
        ("bybit", "SHORT", "Sell", False, "test"),
    }
    assert bad_value == (0,) and candles_bad == (0,)
    assert busiest_second == (1,)  # Binance: at most one per symbol and second
    assert bybit_crowded is not None and bybit_crowded[0] > 0  # Bybit: the complete tape
    for exchange, symbol, moment, side, price, quantity, key in sample:
        assert key == dedup_key(exchange, symbol, _ms(moment), Side(side), price, quantity)


def test_side_follows_the_price_move(generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]]) -> None:
    with psycopg.connect(generated[0]) as conn:
        rows = conn.execute(
            """SELECT sign(c.close - c.open) AS move, r.side, sum(r.value_usd)
               FROM liquidations_1m r JOIN candles c
                 ON c.exchange = r.exchange AND c.symbol = r.symbol AND c.time = r.bucket
               WHERE c.close <> c.open GROUP BY 1, 2"""
        ).fetchall()
    value = {(int(move), side): float(total) for move, side, total in rows}
    assert value[(-1, "LONG")] > 1.5 * value[(-1, "SHORT")]  # falling minutes liquidate longs
    assert value[(1, "SHORT")] > 1.5 * value[(1, "LONG")]


def test_no_data_inside_coverage_gaps(generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]]) -> None:
    url = generated[0]
    with psycopg.connect(url) as conn:
        gaps = conn.execute(
            """SELECT exchange, gap_start, gap_end FROM (
                 SELECT exchange, last_seen_at AS gap_start,
                        lead(connected_at) OVER (PARTITION BY exchange ORDER BY connected_at) AS gap_end
                 FROM stream_coverage) s
               WHERE gap_end IS NOT NULL"""
        ).fetchall()
        long_gaps = [g for g in gaps if g[2] - g[1] >= timedelta(minutes=1)]
        assert len(gaps) >= 4 and long_gaps, "the seed should give reconnects and at least one outage"
        for exchange, start, end in gaps:
            inside = conn.execute(
                "SELECT count(*) FROM liquidations WHERE exchange = %s AND time >= %s AND time < %s",
                (exchange, start, end),
            ).fetchone()
            assert inside == (0,), (exchange, start, end)
        for exchange, start, end in long_gaps:
            candles = conn.execute(
                "SELECT count(*) FROM candles WHERE exchange = %s AND time + interval '1 minute' > %s AND time < %s",
                (exchange, start, end),
            ).fetchone()
            around = conn.execute(
                "SELECT count(*) FROM candles WHERE exchange = %s AND time >= %s - interval '1 hour' AND time < %s",
                (exchange, start, end + timedelta(hours=1)),
            ).fetchone()
            assert candles == (0,) and around is not None and around[0] > 0
        open_rows = conn.execute("SELECT count(*) FROM stream_coverage WHERE disconnected_at IS NULL").fetchone()
    assert open_rows == (2,)  # the last connection of each exchange is still open


def test_cascades_match_their_members(generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]]) -> None:
    url = generated[0]
    with psycopg.connect(url) as conn:
        cascades = conn.execute(
            """SELECT id, symbol, side, start_time, end_time, events, quantity, value_usd, exchanges,
                      events_by_exchange, cross_exchange, price_start, price_end, risk_score FROM cascades"""
        ).fetchall()
        orphans = conn.execute(
            "SELECT count(*) FROM liquidations l WHERE cascade_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM cascades c WHERE c.id = l.cascade_id)"
        ).fetchone()
        assert orphans == (0,)
        assert len(cascades) >= 5
        assert {c[10] for c in cascades} == {True, False}  # some on both exchanges, some on one
        for (
            cid,
            symbol,
            side,
            start,
            end,
            events,
            quantity,
            value,
            exchanges,
            by_exchange,
            cross,
            p0,
            p1,
            risk,
        ) in cascades:
            members = conn.execute(
                "SELECT symbol, side, exchange, time, quantity, value_usd, price, event_key FROM liquidations "
                "WHERE cascade_id = %s ORDER BY time, exchange",
                (cid,),
            ).fetchall()
            opposite = conn.execute(
                "SELECT coalesce(sum(value_usd), 0) FROM liquidations "
                "WHERE symbol = %s AND side <> %s AND time BETWEEN %s AND %s",
                (symbol, side, start, end),
            ).fetchone()
            assert opposite is not None
            weighted = sum(SAMPLED_WEIGHT if m[2] == "binance" else 1 for m in members)
            duration_ms = _ms(end) - _ms(start)
            assert risk == risk_score(value, Decimal(100_000), weighted, duration_ms, opposite[0], len(exchanges))
            assert cid == cascade_id(symbol, side, members[0][7])  # the collector's id for the same first member
            assert {(m[0], m[1]) for m in members} == {(symbol, side)}
            assert len(members) == events >= 5 and value >= 100_000
            assert sum(m[4] for m in members) == quantity and sum(m[5] for m in members) == value
            assert (members[0][3], members[-1][3]) == (start, end) and end - start <= timedelta(seconds=60)
            assert dict(Counter(m[2] for m in members)) == by_exchange and exchanges == sorted(by_exchange)
            assert cross == (len(exchanges) >= 2) and 0 <= risk <= 100
            assert p0 == members[0][6] and p1 == members[-1][6]
            # Every same-side event of the symbol inside the window belongs to it.
            outside = conn.execute(
                "SELECT count(*) FROM liquidations WHERE symbol = %s AND side = %s AND time BETWEEN %s AND %s "
                "AND cascade_id IS DISTINCT FROM %s",
                (symbol, side, start, end, cid),
            ).fetchone()
            assert outside == (0,)


def test_same_seed_same_rows_whatever_the_workers(
    generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]],
) -> None:
    url, _, first = generated
    _empty(url)
    generate(url, _config(), workers=1)
    assert _fingerprint(url) == first


def test_another_seed_gives_other_data() -> None:
    one, other = build_plan(_config(SEED)), build_plan(_config(SEED + 1))
    assert generate_symbol_day(one, 0, 1).liquidation_text != generate_symbol_day(other, 0, 1).liquidation_text
    again = generate_symbol_day(build_plan(_config(SEED)), 0, 1)
    assert again.liquidation_text == generate_symbol_day(one, 0, 1).liquidation_text


def test_cli_refuses_a_filled_database_unless_forced(
    generated: tuple[str, dict[str, float], dict[str, tuple[int, str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, first = generated
    args = ["--database-url", url, "--days", str(DAYS), "--end", END.strftime("%Y%m%d")]
    args += ["--symbols", ",".join(SYMBOLS), "--seed", str(SEED), "--source", "test", "--workers", "1"]
    assert main(args) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0  # replaces the period: the same rows again, not twice
    assert _fingerprint(url) == first
    report = capsys.readouterr().out
    assert "liquidations:" in report and "total" in report


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(GenerateError, match="future"):
        make_config(SYMBOLS, 2, 1, date(2030, 1, 1), "test", now_ms=_ms(datetime(2025, 1, 1, tzinfo=UTC)))
    cut = make_config(SYMBOLS, 2, 1, date(2025, 1, 1), "test", now_ms=_ms(datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)))
    assert cut.end_ms == _ms(datetime(2025, 1, 1, 12, tzinfo=UTC))  # today stops at the current minute
    with pytest.raises(GenerateError, match="seed"):
        make_config(SYMBOLS, 2, -1, date(2025, 1, 1), "test")
    assert main(["--database-url", "postgresql://x@127.0.0.1:1/x", "--end", "2025-01-01"]) == 1
