"""The cascade detector's CPU per liquidation when the whole market is in cascades at once.

    PYTHONPATH=. .venv/bin/python -m bench.bench_cascade_burst [--instruments 1950] [--rate 5000]
        [--seconds 60] [--batch 50 --batch 500] [--rounds 3]

A burst like bench.bench_market's: `--rate` liquidations a second for `--seconds`, round robin over
`--instruments` contracts ($200 to $20,000 each, 70 % longs), exchange time advancing with them,
fed to `CascadeDetector.process` (the default relative rule, no history: every instrument and side
turns into a cascade within seconds, as in a market-wide flush) in batches of `--batch` events, as
the router hands them over under load. Reported per batch size: CPU microseconds per liquidation
(process time, the best of `--rounds`), the cascades active at the end and the cascade updates
returned. Before the end check followed a schedule (7b67448), every batch checked every active
cascade twice, and the detector cost grew with the number of active cascades.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace
from decimal import Decimal

from collector.cascades import CascadeDetector
from common.events import Liquidation, Side

T0 = 1_795_000_020_000


def burst(instruments: int, rate: int, seconds: int, seed: int = 1) -> list[Liquidation]:
    rng = random.Random(seed)
    symbols = [f"C{i}USDT" for i in range(instruments)]
    events = []
    for i in range(rate * seconds):
        t = T0 + i * 1000 // rate
        usd = Decimal(rng.choice([200, 1_000, 5_000, 20_000]))
        events.append(
            Liquidation(
                exchange="bybit",
                symbol=symbols[i % instruments],
                side=Side.LONG if rng.random() < 0.7 else Side.SHORT,
                quantity=usd / 10,
                price=Decimal(10),
                value_usd=usd,
                time_ms=t,
                received_ms=t + 5,
                raw_side="Buy",
                source="live",
                sampled=False,
            )
        )
    return events


def run(events: list[Liquidation], batch: int) -> tuple[float, int, int, list[tuple[float, float]]]:
    """CPU seconds, cascades active at the end, cascade updates returned, and the slowest steps
    (wall ms, the batch's first exchange time in s from the burst's start)."""
    detector = CascadeDetector(60, 5, Decimal(20_000))
    updates = 0
    steps = []
    started = time.process_time()
    for k in range(0, len(events), batch):
        chunk = events[k : k + batch]
        step = time.perf_counter()
        updates += len(detector.process(chunk, chunk[-1].received_ms).cascades)
        steps.append(((time.perf_counter() - step) * 1000, (chunk[0].time_ms - T0) / 1000))
    return time.process_time() - started, len(detector.active), updates, sorted(steps, reverse=True)[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=1950)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch", type=int, action="append", help="events a batch (repeatable; 50 and 500)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = burst(args.instruments, args.rate, args.seconds)
    print(f"{len(events):,} liquidations over {args.instruments:,} instruments at {args.rate:,}/s")
    for size in args.batch or [50, 500]:
        runs = [run([replace(ev, cascade_id=None) for ev in events], size) for _ in range(args.rounds)]
        cpu, active, updates, slowest = min(runs)
        print(
            f"batches of {size:>4}: {cpu / len(events) * 1e6:6.1f} us per liquidation (best of {args.rounds}), "
            f"{active:,} cascades active at the end, {updates:,} cascade updates; slowest steps "
            + ", ".join(f"{ms:.0f} ms at +{at:.1f} s" for ms, at in slowest)
            + " (a UTC minute turns every 60 s from +0: every active cascade is re-checked then)"
        )


if __name__ == "__main__":
    main()
