"""Database CPU per liquidation of the writer's statements, on whole-market batches.

    python -m bench.bench_db [--events 60000] [--batch 5000] [--runs 2]

Writes `--events` liquidations (1,150 symbols on two venues, prices from 0.0001 to 100,000,
5,000 a second of exchange time, as bench_market's burst) through the real `TimescaleWriter` in
batches of `--batch`, into a fresh database on the server at DATABASE_URL (dropped afterwards), and
prints the CPU its PostgreSQL backends spent per liquidation (from /proc: the server must run on
this machine, as `make services` starts it) and the wall time per liquidation, in two cases:

- open hours: the rows are past the fold's line, as live flow is: the writer upserts the minute
  rollup only; then the fold of those hours (db/rollups.py `FOLD`), which replaces the hour and
  day upserts, is timed (wall time: its one backend is busy throughout);
- closed hours: the rows are before the line (a venue behind, a replayed spool): every rollup
  tier is upserted by the writer, as every batch was before migration 0018.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.bench_pipeline import create_bench_database, drop_bench_database
from collector.storage.maintenance import fold_closed_hours
from collector.storage.spool import Batch
from collector.storage.timescale import TimescaleWriter
from common.config import load_settings
from common.events import Liquidation, Side

SYMBOLS = 1_150
PER_SECOND = 5_000


def make_events(n: int, start_ms: int, seed: int = 1) -> list[Liquidation]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        exchange = "binance" if i % 2 else "bybit"
        qty = Decimal(rng.randint(1, 1_000_000)) / 100
        price = Decimal(rng.randint(1, 1_000_000_000)) / 10_000
        t = start_ms + i * 1000 // PER_SECOND
        events.append(
            Liquidation(
                exchange=exchange,
                symbol=f"C{rng.randrange(SYMBOLS)}USDT",
                side=Side.LONG if rng.random() < 0.7 else Side.SHORT,
                quantity=qty,
                price=price,
                value_usd=qty * price,
                time_ms=t,
                received_ms=t + 30,
                raw_side="SELL",
                source="live",
                sampled=exchange == "binance",
            )
        )
    return events


def backend_cpu_s(database: str) -> float:
    """CPU (user + system) of every server process working for `database` now."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            if f" {database} ".encode() not in title:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def _write(url: str, events: list[Liquidation], batch: int) -> tuple[float, float]:
    database = urlsplit(url).path.lstrip("/")
    writer = TimescaleWriter(url)
    await writer.open()
    try:
        await writer.write(Batch(liquidations=events[:batch]))  # connections up, statements prepared
        cpu0, wall0 = backend_cpu_s(database), time.perf_counter()
        for start in range(batch, len(events), batch):
            await writer.write(Batch(liquidations=events[start : start + batch]))
        cpu1, wall1 = backend_cpu_s(database), time.perf_counter()
    finally:
        await writer.close()
    n = len(events) - batch
    return 1e6 * (cpu1 - cpu0) / n, 1e6 * (wall1 - wall0) / n


def _set_line(url: str, line: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE rollup_fold SET folded_through = time_bucket('1 hour', %s::timestamptz)", (line,))


async def _case(base: str, events: list[Liquidation], batch: int, open_hours: bool) -> str:
    url = create_bench_database(base)
    try:
        first = events[0].time_ms / 1000
        # Open hours: the line at the hour of the first event; closed: two hours after the last.
        _set_line(url, time.strftime("%Y-%m-%d %H:00:00+00", time.gmtime(first if open_hours else first + 86_400)))
        cpu, wall = await _write(url, events, batch)
        line = f"{'open' if open_hours else 'closed'} hours: writer {cpu:.1f} us/liq of database CPU, {wall:.1f} us/liq wall"
        if open_hours:  # the fold's backend leaves with its connection: its wall time stands for its CPU
            wall0 = time.perf_counter()
            folded = await fold_closed_hours(url, now=events[-1].time_ms / 1000 + 7_200, delay_s=0)
            fold_s = time.perf_counter() - wall0
            line += f"; fold of {folded} hours {1e3 * fold_s:.0f} ms wall ({1e6 * fold_s / len(events):.2f} us/liq)"
        return line
    finally:
        drop_bench_database(base, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    base = load_settings().database_url
    events = make_events(args.events, (int(time.time()) // 3600 - 3) * 3_600_000)
    print(f"{args.events:,} liquidations, {SYMBOLS:,} symbols x 2 venues, batches of {args.batch:,}")
    for run in range(args.runs):
        for open_hours in (True, False):
            print(f"run {run + 1}: " + asyncio.run(_case(base, events, args.batch, open_hours)), flush=True)


if __name__ == "__main__":
    main()
