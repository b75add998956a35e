"""Cascades on a synthetic whole-market day under both rules; the detector's throughput and memory.

    .venv/bin/python -m bench.bench_cascades [--seed 7] [--batch 1]
    .venv/bin/python -m bench.bench_cascades --database-url URL [--days 365] [--small-ranks 100,300]

With `--database-url`, the figures come from the whole-market dataset instead (bench.gen_dataset
--market): cascades per day for BTC and small coins under both rules (bench.market_cascades).
Without it:

The market: 700 coins, 600 Binance and 550 Bybit perpetuals (450 coins on both venues, 16 of them
spelt `1000...USDT`), about $600M liquidated on a normal day: BTC $250M, ETH $150M, SOL $40M and a
Zipf tail ($11M for the 4th coin, $250k for the 100th, $25k for the 700th). Each coin's flow
follows a daily cycle, hourly regimes shared by the market, and the price: the liquidated side
swings with the minute's move. BTC, ETH and SOL have a busy hour at 14:00 (three times the rate).
Real cascades are added on top: BTC, ETH and SOL about four a day (20-100x their mean minute, in
10-60 s), the tail coins one every two days or so ($10k-$300k in 10-60 s, median $35k). Binance
keeps one liquidation per symbol and second, Bybit the whole tape.

Two days are generated. Day 0 is the history: its per-minute USD per coin seeds the relative
rule's baseline (`CascadeDetector.seed_baseline`, as the service does from the rollups at start).
Day 1 is fed in time order through the detector, under `fixed` (the original rule) and
`relative`, and once more under `relative` without the seed (a cold start). Reported: cascades per
day for the whole market, BTC, ETH and two small coins; the share of events inside cascades; the
longest cascade; how many of the real bursts were found; events per second through `process()`;
and the memory the detector holds for 1,150 instruments with a full day of baseline each
(tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from bench.market_cascades import report as market_report
from collector.cascades import DAY_MINUTES, FIXED, RELATIVE, CascadeDetector
from common.events import Cascade, Liquidation, Side
from common.instruments import guess_instrument

DAY_MS = 86_400_000
MINUTE_MS = 60_000
START_MS = 1_795_000_000_000 - 1_795_000_000_000 % DAY_MS  # a midnight in 2026
N_COINS = 700
BOTH, BINANCE_ONLY = 450, 150  # coins 1-450 on both venues, 451-600 Binance only, 601-700 Bybit only
SMALL_COINS = (150, 400)  # ranks reported as "a small coin"


@dataclass(frozen=True)
class Coin:
    rank: int
    base: str
    day_usd: float  # whole market, both venues, a normal day
    median_usd: float  # one liquidation
    price: float
    venues: tuple[str, ...]
    multiplier: int  # 1000 for `1000XUSDT`
    bursts_per_day: float

    def symbol(self) -> str:
        return f"{self.multiplier if self.multiplier > 1 else ''}{self.base}USDT"


def market() -> list[Coin]:
    coins = []
    majors = {
        1: ("BTC", 250e6, 2_500.0, 60_000.0),
        2: ("ETH", 150e6, 2_000.0, 3_000.0),
        3: ("SOL", 40e6, 1_500.0, 150.0),
    }
    for rank in range(1, N_COINS + 1):
        if rank in majors:
            base, day_usd, median, price = majors[rank]
            bursts = 4.0
        else:
            base, day_usd, median = f"T{rank:03d}", 60e6 * rank**-1.2, 600.0
            price = float(10 ** ((rank * 7919) % 600 / 100 - 2))  # 0.01 .. 10,000
            bursts = 0.5
        venues = ("binance", "bybit") if rank <= BOTH else ("binance",) if rank <= BOTH + BINANCE_ONLY else ("bybit",)
        multiplier = 1000 if 3 < rank <= BOTH and rank % 28 == 7 else 1
        coins.append(Coin(rank, base, day_usd, median, price, venues, multiplier, bursts))
    return coins


@dataclass
class Tape:
    """One day of liquidations, sorted by time: numpy columns."""

    t: npt.NDArray[np.int64]
    coin: npt.NDArray[np.int64]  # index into market()
    binance: npt.NDArray[np.bool_]
    long: npt.NDArray[np.bool_]
    usd: npt.NDArray[np.float64]
    burst: npt.NDArray[np.int64]  # -1: background flow; else the burst's number


def generate_day(coins: list[Coin], day: int, seed: int) -> tuple[Tape, int]:
    rng = np.random.default_rng([seed, day])
    start = START_MS + day * DAY_MS
    hour = np.arange(DAY_MINUTES) / 60
    cycle = 0.75 + 0.5 * np.exp(-(((hour - 14.5) / 2.5) ** 2)) + 0.2 * np.exp(-(((hour - 1.5) / 2.0) ** 2))
    regime = np.exp(np.repeat(np.cumsum(rng.normal(0, 0.15, 24)), 60))
    market_z = rng.standard_t(4, DAY_MINUTES) / math.sqrt(2)
    columns: dict[str, list[npt.NDArray[np.generic]]] = defaultdict(list)
    n_bursts = 0
    for index, coin in enumerate(coins):
        weight = cycle * regime * np.exp(np.repeat(rng.normal(0, 0.3, 24), 60))
        if coin.rank <= 3:
            weight[14 * 60 : 15 * 60] *= 3  # the busy hour
        weight /= weight.mean()
        z = 0.7 * market_z + 0.7 * rng.standard_normal(DAY_MINUTES)
        mean_usd = coin.median_usd * math.exp(1.4**2 / 2)
        counts = rng.poisson(coin.day_usd / mean_usd / DAY_MINUTES * weight)
        minute = np.repeat(np.arange(DAY_MINUTES), counts)
        t = start + minute * MINUTE_MS + rng.integers(0, MINUTE_MS, minute.size)
        long = rng.random(minute.size) < 1 / (1 + np.exp(1.5 * z[minute]))
        usd = rng.lognormal(math.log(coin.median_usd), 1.4, minute.size)
        parts = [(t, long, usd, np.full(t.size, -1))]
        for _ in range(rng.poisson(coin.bursts_per_day)):
            b_start = start + int(rng.integers(0, DAY_MS - 120_000))
            duration = int(rng.integers(10_000, 60_000))
            if coin.rank <= 3:
                total = coin.day_usd / DAY_MINUTES * float(rng.uniform(20, 100))
            else:
                total = float(np.clip(rng.lognormal(math.log(35_000), 0.9), 10_000, 300_000))
            n = int(np.clip(total / (coin.median_usd * 4), 6, 400))
            b_t = b_start + (rng.beta(1.0, 2.5, n) * duration).astype(np.int64)
            b_usd = rng.lognormal(0, 0.8, n)
            parts.append((b_t, np.full(n, bool(rng.random() < 0.6)), b_usd * total / b_usd.sum(), np.full(n, n_bursts)))
            n_bursts += 1
        t = np.concatenate([p[0] for p in parts])
        on_binance = (
            rng.random(t.size) < 0.55 if len(coin.venues) == 2 else np.full(t.size, coin.venues == ("binance",))
        )
        columns["t"].append(t)
        columns["coin"].append(np.full(t.size, index))
        columns["binance"].append(on_binance)
        columns["long"].append(np.concatenate([p[1] for p in parts]))
        columns["usd"].append(np.concatenate([p[2] for p in parts]))
        columns["burst"].append(np.concatenate([p[3] for p in parts]))
    cols = {k: np.concatenate(v) for k, v in columns.items()}
    order = np.lexsort((cols["binance"], cols["coin"], cols["t"]))
    cols = {k: v[order] for k, v in cols.items()}
    # Binance pushes the last liquidation per symbol and second
    b = np.flatnonzero(cols["binance"])
    key = cols["coin"][b] * 10**9 + cols["t"][b] // 1000
    drop = b[:-1][key[:-1] == key[1:]]
    keep = np.ones(cols["t"].size, dtype=bool)
    keep[drop] = False
    cols = {k: v[keep] for k, v in cols.items()}
    return Tape(cols["t"], cols["coin"], cols["binance"], cols["long"], cols["usd"], cols["burst"]), n_bursts


def minute_usd(coins: list[Coin], tape: Tape) -> dict[str, list[tuple[int, float]]]:
    """Per canonical instrument: (minute ms, USD), as the 1-minute rollups would give it."""
    out: dict[str, list[tuple[int, float]]] = {}
    minutes = tape.t // MINUTE_MS
    for index, coin in enumerate(coins):
        sel = tape.coin == index
        if not sel.any():
            continue
        m, inverse = np.unique(minutes[sel], return_inverse=True)
        sums = np.bincount(inverse, weights=tape.usd[sel])
        name = guess_instrument(coin.venues[0], coin.symbol()).canonical
        out[name] = [(int(x) * MINUTE_MS, float(s)) for x, s in zip(m, sums, strict=True)]
    return out


def events(coins: list[Coin], tape: Tape) -> list[Liquidation]:
    out = []
    for t, index, on_binance, long, usd in zip(
        tape.t.tolist(), tape.coin.tolist(), tape.binance.tolist(), tape.long.tolist(), tape.usd.tolist(), strict=True
    ):
        coin = coins[index]
        exchange = "binance" if on_binance else "bybit"
        price = Decimal(f"{coin.price * coin.multiplier:.6g}")
        qty = max(Decimal(f"{usd / float(price):.4g}"), Decimal("0.001"))
        out.append(
            Liquidation(
                exchange=exchange,
                symbol=coin.symbol(),
                side=Side.LONG if long else Side.SHORT,
                quantity=qty,
                price=price,
                value_usd=qty * price,
                time_ms=t,
                received_ms=t + 50,
                raw_side="",
                source="bench",
                sampled=on_binance,
            )
        )
    return out


def feed(detector: CascadeDetector, evs: list[Liquidation], batch: int) -> tuple[dict[int, Cascade], float]:
    """Every cascade's final state, and the CPU seconds of the feeding loop (this thread's time, so
    other processes on a shared machine do not count)."""
    found: dict[int, Cascade] = {}
    for ev in evs:
        ev.cascade_id = None
    chunks = [evs[i : i + batch] for i in range(0, len(evs), batch)]
    t0 = time.thread_time()
    for chunk in chunks:
        for c in detector.process(chunk, chunk[0].received_ms).cascades:
            found[c.id] = c
    spent = time.thread_time() - t0
    for c in detector.close_all():
        found[c.id] = c
    return found, spent


@dataclass
class Report:
    label: str
    cascades: dict[int, Cascade]
    cpu_s: float
    member_of: list[int | None]  # per event of the day: its cascade id under this rule


def busiest_minute(tape: Tape, index: int) -> float:
    """The coin's largest same-side USD in one calendar minute of the day."""
    sel = tape.coin == index
    keys = tape.t[sel] // MINUTE_MS * 2 + tape.long[sel]
    if not keys.size:
        return 0.0
    _, inverse = np.unique(keys, return_inverse=True)
    return float(np.bincount(inverse, weights=tape.usd[sel]).max())


def small_coin(tape: Tape, rank: int) -> int:
    """The first coin from `rank` down the list that had a real burst of at least $20,000 that day."""
    burst_usd: dict[int, float] = defaultdict(float)
    for b, index, usd in zip(tape.burst.tolist(), tape.coin.tolist(), tape.usd.tolist(), strict=True):
        if b >= 0:
            burst_usd[index] += usd
    return min(i for i, usd in burst_usd.items() if i >= rank - 1 and usd >= 20_000)


def coin_line(report: Report, name: str, tape: Tape, index: int) -> str:
    mine = [c for c in report.cascades.values() if c.symbol == name]
    sel = np.flatnonzero(tape.coin == index)
    inside = sum(1 for i in sel.tolist() if report.member_of[i] is not None)
    longest = max((c.end_ms - c.start_ms for c in mine), default=0) / 60_000
    bursts = len(set(tape.burst[sel].tolist()) - {-1})
    return (
        f"    {name:<15} {len(mine):>4} cascades/day, {inside:>6,} of {sel.size:>6,} events inside "
        f"({inside / max(sel.size, 1):>4.0%}), longest {longest:>5.1f} min; real bursts: {bursts}"
    )


def burst_recall(report: Report, tape: Tape) -> tuple[int, int, int, int]:
    """Real bursts found (80 % of their events in one cascade): all, and those of $20,000 or more;
    and cascades holding no burst event at all (made of the ordinary flow)."""
    by_burst: dict[int, dict[int | None, int]] = defaultdict(lambda: defaultdict(int))
    burst_usd: dict[int, float] = defaultdict(float)
    with_burst: set[int] = set()
    for cid, b, usd in zip(report.member_of, tape.burst.tolist(), tape.usd.tolist(), strict=True):
        if b >= 0:
            by_burst[b][cid] += 1
            burst_usd[b] += usd
            if cid is not None:
                with_burst.add(cid)
    found = {
        b
        for b, counts in by_burst.items()
        if max((n for c, n in counts.items() if c is not None), default=0) >= 0.8 * sum(counts.values())
    }
    big = {b for b, usd in burst_usd.items() if usd >= 20_000}
    return len(found), len(found & big), len(big), len(set(report.cascades) - with_burst)


def memory_for(instruments: int, seed_minutes: int = DAY_MINUTES) -> tuple[float, float]:
    """MB a relative detector holds with `instruments` baselines seeded with a full day, and per instrument in KB."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    d = CascadeDetector(60, 5, Decimal(20_000))
    for i in range(instruments):
        d.seed_baseline(f"C{i}-USDT-PERP", ((START_MS - (k + 1) * MINUTE_MS, 1_000) for k in range(seed_minutes)))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del d
    return used / 1e6, used / instruments / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="the whole-market dataset: both rules on its tape")
    parser.add_argument("--days", type=int, default=365, help="with --database-url: the last N days")
    parser.add_argument("--small-ranks", default="100,300", help="with --database-url: small coins by USD rank")
    args = parser.parse_args()
    if args.database_url:
        market_report(args.database_url, args.days, [int(r) for r in args.small_ranks.split(",") if r.strip()])
        return

    coins = market()
    t0 = time.perf_counter()
    history, _ = generate_day(coins, 0, args.seed)
    tape, n_bursts = generate_day(coins, 1, args.seed)
    evs = events(coins, tape)
    seeds = minute_usd(coins, history)
    print(f"generated in {time.perf_counter() - t0:.1f} s: day 1 holds {len(evs):,} liquidations "
          f"(${tape.usd.sum() / 1e6:,.0f}M, Binance sampled) on {len(coins)} coins, "
          f"{sum(len(c.venues) for c in coins):,} venue symbols; {n_bursts} real bursts")  # fmt: skip

    def detector(rule: str, seeded: bool) -> CascadeDetector:
        d = CascadeDetector(60, 5, Decimal(100_000 if rule == FIXED else 20_000), rule=rule)
        if seeded:
            for name, minutes in seeds.items():
                d.seed_baseline(name, minutes)
        gc.collect()
        return d

    reports = []
    for label, rule, seeded in (
        ("fixed", FIXED, False),
        ("relative", RELATIVE, True),
        ("relative, cold", RELATIVE, False),
    ):
        found, cpu = feed(detector(rule, seeded), evs, 1)
        reports.append(Report(label, found, cpu, [ev.cascade_id for ev in evs]))

    names = {i: guess_instrument(c.venues[0], c.symbol()).canonical for i, c in enumerate(coins)}
    watched = [0, 1] + [small_coin(tape, rank) for rank in SMALL_COINS]
    print("\nwatched coins (a normal day's liquidations; busiest same-side minute of day 1):")
    for index in watched:
        c = coins[index]
        print(f"    {names[index]:<15} ${c.day_usd:>13,.0f}/day, busiest minute ${busiest_minute(tape, index):>11,.0f}")
    for r in reports:
        inside = sum(1 for cid in r.member_of if cid is not None)
        durations = [c.end_ms - c.start_ms for c in r.cascades.values()]
        recalled, recalled_big, big, flow_only = burst_recall(r, tape)
        tail = [c for c in r.cascades.values() if c.symbol not in {names[0], names[1], names[2]}]
        print(f"\n{r.label}: {len(r.cascades):,} cascades/day on {len({c.symbol for c in r.cascades.values()})} coins "
              f"({len(tail)} on {len({c.symbol for c in tail})} coins outside BTC, ETH, SOL); "
              f"{inside:,} of {len(evs):,} events inside ({inside / len(evs):.1%}); "
              f"longest {max(durations, default=0) / 60_000:.1f} min\n"
              f"    real bursts found {recalled} of {n_bursts} ({recalled_big} of the {big} of $20,000 or more); "
              f"cascades made of ordinary flow only: {flow_only}; "
              f"{len(evs) / r.cpu_s:,.0f} events per CPU-second (one event per process() call)")  # fmt: skip
        for index in watched:
            print(coin_line(r, names[index], tape, index))
        if r.label == "relative, cold":
            first = sum(1 for c in r.cascades.values() if c.start_ms < START_MS + DAY_MS + 30 * MINUTE_MS)
            print(f"    of which in the first 30 minutes (warm-up, no seed): {first}")

    print(
        "\nthroughput, events per CPU-second through process() (the router passes what is queued: 1 at low rates, up to LIQ_BATCH_MAX):"
    )
    for rule in (FIXED, RELATIVE):
        figures = []
        for batch in (1, 100, 5_000):
            _, cpu = feed(detector(rule, rule == RELATIVE), evs, batch)
            figures.append(f"batches of {batch:>5,}: {len(evs) / cpu:>9,.0f}")
        print(f"    {rule:<9}" + "   ".join(figures))

    mb, kb = memory_for(1_150)
    print(f"\nmemory: {mb:.1f} MB for 1,150 instruments with a full day of baseline each ({kb:.1f} KB each)")


if __name__ == "__main__":
    main()
