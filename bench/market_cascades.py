"""Cascades per day under both rules on the whole-market dataset (issue 10, item 7).

    .venv/bin/python -m bench.bench_cascades --database-url postgresql://liq@127.0.0.1:5433/liq_bench_market \
        [--days 365] [--small-ranks 100,300]

For BTC and for small coins (the coins at the given ranks by USD liquidated over the period),
the stored tape of every venue of the coin is read in the order the collector receives it
(receive time, then exchange time) and fed, one event per `process()` call with `now` its
receive time, to two detectors built from the collector's own settings: `LIQ_CASCADE_RULE=
relative` (the default: floor $20,000, 10x the trailing 24-hour baseline) and `LIQ_CASCADE_RULE=
fixed` (the original rule: $100,000 in 60 s, ended only by quiet). The relative detector's
baseline is seeded from the 1-minute rollups of the day before the period, as the collector does
at start. Reported per coin and rule: cascades per day (mean and busiest day), the share of the
coin's events inside cascades, the longest cascade; and the cascades the generator stored
(which ran the relative rule over the whole year).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from collector.cascades import CascadeDetector
from common.config import load_settings
from common.events import Cascade, Liquidation, Side

_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class RuleResult:
    rule: str
    cascades: dict[int, Cascade] = field(default_factory=dict)

    def add(self, found: list[Cascade]) -> None:
        for c in found:
            self.cascades[c.id] = c


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def pick_coins(conn: psycopg.Connection, ranks: list[int], since: datetime) -> list[tuple[int, str, float]]:
    """(rank, coin, USD) for BTC and the coins at `ranks` by USD liquidated since `since`."""
    rows = conn.execute(
        """SELECT i.base, sum(r.value_usd)::float8 FROM liquidations_1h_all r JOIN instruments i USING (exchange, symbol)
           WHERE r.bucket >= %s GROUP BY 1 ORDER BY 2 DESC""",
        (since,),
    ).fetchall()
    wanted = [1, *ranks]
    return [(rank, rows[rank - 1][0], rows[rank - 1][1]) for rank in wanted if rank <= len(rows)]


def _detector(rule: str) -> CascadeDetector:
    return CascadeDetector.from_settings(load_settings(env={"LIQ_CASCADE_RULE": rule}, dotenv=None))


def run_coin(conn: psycopg.Connection, coin: str, since: datetime, until: datetime) -> tuple[int, list[RuleResult]]:
    """Feed the coin's tape in [since, until) to both rules; return the events read and each rule's cascades."""
    listings = conn.execute("SELECT exchange, symbol FROM instruments WHERE base = %s", (coin,)).fetchall()
    symbols = sorted({symbol for _, symbol in listings})
    pairs = set(listings)
    detectors = {"relative": _detector("relative"), "fixed": _detector("fixed")}
    seed: dict[int, Decimal] = {}
    for exchange, symbol, minute, usd in conn.execute(
        """SELECT exchange, symbol, bucket, sum(value_usd) FROM liquidations_1m
           WHERE symbol = ANY(%s) AND bucket >= %s AND bucket < %s GROUP BY 1, 2, 3""",
        (symbols, since - timedelta(days=1), since),
    ):
        if (exchange, symbol) in pairs:
            seed[_ms(minute)] = seed.get(_ms(minute), Decimal(0)) + usd
    name = f"{coin}-USDT-PERP"
    detectors["relative"].seed_baseline(name, sorted(seed.items()))
    results = {rule: RuleResult(rule) for rule in detectors}
    events = 0
    with conn.cursor(name="tape") as cur:
        cur.itersize = 20_000
        cur.execute(
            """SELECT time, exchange, symbol, side, quantity, price, value_usd, raw_side, received_at, source,
                      sampled, event_key FROM liquidations
               WHERE symbol = ANY(%s) AND time >= %s AND time < %s ORDER BY received_at, time""",
            (symbols, since, until),
        )
        for r in cur:
            if (r[1], r[2]) not in pairs:
                continue
            ev = Liquidation(r[1], r[2], Side(r[3]), r[4], r[5], r[6], _ms(r[0]), _ms(r[8]), r[7], r[9], r[10], r[11])
            events += 1
            for rule, detector in detectors.items():
                results[rule].add(detector.process([ev], ev.received_ms).cascades)
    for rule, detector in detectors.items():
        results[rule].add(detector.close_all())
    return events, [results["relative"], results["fixed"]]


def _line(label: str, cascades: list[Cascade], events: int, days: float) -> str:
    per_day = Counter(c.start_ms // _DAY_MS for c in cascades)
    inside = sum(c.count for c in cascades)
    longest = max((c.end_ms - c.start_ms for c in cascades), default=0) / 60_000
    busiest = max(per_day.values(), default=0)
    return (
        f"    {label:<22} {len(cascades) / days:>7.2f} cascades/day (busiest day {busiest:>4}), "
        f"{inside / max(events, 1):>6.1%} of the events inside, longest {longest:>5.1f} min"
    )


def report(database_url: str, days: int, ranks: list[int]) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT max(time) FROM liquidations").fetchone()
        if row is None or row[0] is None:
            raise SystemExit("the database holds no liquidations: generate it with bench.gen_dataset --market")
        until = row[0] + timedelta(milliseconds=1)
        first = conn.execute("SELECT min(time) FROM liquidations").fetchone()
        since = max(until - timedelta(days=days), first[0] if first else until)
        span = (until - since) / timedelta(days=1)
        print(f"whole-market data {since:%Y%m%d %H:%M:%S} .. {until:%Y%m%d %H:%M:%S} UTC ({span:.1f} days)")
        for rank, coin, usd in pick_coins(conn, ranks, since):
            began = time.monotonic()
            events, (relative, fixed) = run_coin(conn, coin, since, until)
            stored = [
                Cascade(0, "", Side(s), _ms(a), _ms(b), n, Decimal(0), Decimal(0))
                for s, a, b, n in conn.execute(
                    "SELECT side, start_time, end_time, events FROM cascades WHERE symbol = %s AND start_time >= %s",
                    (f"{coin}-USDT-PERP", since),
                )
            ]
            print(
                f"\n{coin} (rank {rank} by USD): {events:,} liquidations, ${usd / span:,.0f} a day "
                f"({time.monotonic() - began:.0f} s)"
            )
            print(_line("relative (default)", list(relative.cascades.values()), events, span))
            print(_line("fixed (original rule)", list(fixed.cascades.values()), events, span))
            print(_line("stored by the generator", stored, events, span))
