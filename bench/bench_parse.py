"""Parse + normalise cost per frame, per exchange and message type, on one core.

    .venv/bin/python -m bench.bench_parse [--frames N] [--case TEXT] [--cryptofeed-python PATH]

Times the adapters' dispatchers (`handle(raw, received_ms)`: JSON decode, raw schema, checks,
normalised events with their dedup keys) one frame at a time with `perf_counter_ns`, after a
warm-up, in several rounds, and prints the median and p99 in microseconds (p99 of the quietest
round and of all samples: on a shared machine other processes preempt us), the process CPU time
per frame, and frames per second at the median. The process is pinned to one CPU where the OS allows it. Target: p99 <= 20 us
per single-event frame (multi-event frames are reported, and judged per event: p99 / events).
Issue #10's target, per liquidation on the market cases (a Binance frame, a Bybit item: columns
med/ev and p99/ev, each sample divided by its frame's events): median <= 2.5 us, p99 <= 5 us.

The first five cases repeat one captured frame (comparable with earlier figures). The "market"
cases time as many distinct frames as a round has, shaped like the whole market: 400 symbols
(three of them not ASCII, like Binance's `币安人生USDT`), prices on a tick grid written with
trailing zeros ("0.2139000"), quantities from 0.001 to 1,000,000, fill prices that rarely repeat,
candles whose open, high and low repeat from one update to the next as in a real stream.

With `--cryptofeed-python` (an interpreter that has cryptofeed), cryptofeed's own Binance handler is
timed the same way on the Binance market frames, one of its rounds after each round of a market
case, and each market case is printed as a ratio to it, pair by pair: the issue's target was set beside cryptofeed (2.5 us where it took
2.9 us), so at most 0.862 holds on any machine, however fast or loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import math
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from collector import validation
from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bitget import BitgetAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.connection import ExchangeAdapter
from collector.exchanges.gate import GateAdapter
from collector.exchanges.okx import OkxAdapter
from collector.health import StreamHealth
from common.config import Settings, load_settings
from common.instruments import CONTRACTS, Instrument, guess_instrument

RECEIVED_MS = 1732400061000
TARGET_P99_US = 20.0
# Issue #10: per liquidation on whole-market frames (Binance frame, Bybit item).
TARGET_MEDIAN_EVENT_US = 2.5
TARGET_P99_EVENT_US = 5.0
TARGET_RATIO = TARGET_MEDIAN_EVENT_US / 2.9  # cryptofeed's median on the frames the target was set on
TARGET_P99_RATIO = TARGET_P99_EVENT_US / 2.9
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_cryptofeed.py")

_BINANCE_FORCE_ORDER: dict[str, Any] = {
    "stream": "btcusdt@forceOrder",
    "data": {
        "e": "forceOrder",
        "E": 1732400000123,
        "o": {
            "s": "BTCUSDT",
            "S": "SELL",
            "o": "LIMIT",
            "f": "IOC",
            "q": "0.014",
            "p": "97210.10",
            "ap": "97354.60",
            "X": "FILLED",
            "l": "0.014",
            "z": "0.014",
            "T": 1732400000119,
        },
    },
}
_BINANCE_KLINE: dict[str, Any] = {
    "stream": "btcusdt@kline_1m",
    "data": {
        "e": "kline",
        "E": 1732400060012,
        "s": "BTCUSDT",
        "k": {
            "t": 1732400000000,
            "T": 1732400059999,
            "s": "BTCUSDT",
            "i": "1m",
            "f": 5500000001,
            "L": 5500001200,
            "o": "97300.0",
            "c": "97210.1",
            "h": "97410.0",
            "l": "97150.2",
            "v": "412.337",
            "n": 1200,
            "x": False,
            "q": "40115322.51",
            "V": "201.1",
            "Q": "19566231.02",
            "B": "0",
        },
    },
}
_BYBIT_ITEMS = [
    {"T": 1732400000321, "s": "BTCUSDT", "S": "Buy", "v": "0.250", "p": "97012.50"},
    {"T": 1732400000377, "s": "BTCUSDT", "S": "Sell", "v": "0.004", "p": "97655.00"},
    {"T": 1732400000402, "s": "BTCUSDT", "S": "Buy", "v": "1.100", "p": "97001.00"},
    {"T": 1732400000455, "s": "BTCUSDT", "S": "Buy", "v": "0.031", "p": "96990.40"},
    {"T": 1732400000490, "s": "BTCUSDT", "S": "Sell", "v": "0.700", "p": "97700.10"},
]
_BYBIT_KLINE: dict[str, Any] = {
    "topic": "kline.1.BTCUSDT",
    "type": "snapshot",
    "ts": 1732400060012,
    "data": [
        {
            "start": 1732400000000,
            "end": 1732400059999,
            "interval": "1",
            "open": "97300",
            "close": "97210.1",
            "high": "97410",
            "low": "97150.2",
            "volume": "388.21",
            "turnover": "37766554.2",
            "confirm": False,
            "timestamp": 1732400060012,
        }
    ],
}


def _bybit_liquidations(n: int) -> dict[str, object]:
    return {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1732400000500, "data": _BYBIT_ITEMS[:n]}


_NON_ASCII = ("币安人生USDT", "龙虾USDT", "牛来USDT")
_MARKET_SYMBOLS = 400


class _Symbol:
    """One instrument as its streams show it: prices on a tick grid written with fixed decimals
    (so "0.2139000"), a 1-minute candle that grows with every update (250 ms apart)."""

    def __init__(self, rng: random.Random, name: str) -> None:
        self.rng, self.name = rng, name
        price = 10 ** rng.uniform(-4, 5)
        self.decimals = 7 if price < 1 else 2 if price < 1000 else 1
        self.tick = 10 ** (math.floor(math.log10(price)) - 3)  # 4 significant digits move
        self.ticks = round(price / self.tick)
        self.updates = 0
        self._new_minute()

    def _new_minute(self) -> None:
        self.open = self.high = self.low = self.ticks
        self.volume = 0.0
        self.quote = 0.0

    def text(self, ticks: int) -> str:
        return f"{ticks * self.tick:.{self.decimals}f}"

    def quantity(self) -> str:
        """1 to 1,000,000 contracts or 0.001 to 100 units, under the USD bound of one event."""
        rng = self.rng
        price = self.ticks * self.tick
        if rng.random() < 0.5:
            return str(max(1, min(rng.randint(1, 1_000_000), int(1e9 / price))))
        return f"{min(rng.uniform(0.001, 100), 1e9 / price):.3f}"

    def update(self) -> None:
        self.updates += 1
        if self.updates % 240 == 0:
            self._new_minute()
        self.ticks = max(1, self.ticks + self.rng.randint(-2, 2))
        self.high, self.low = max(self.high, self.ticks), min(self.low, self.ticks)
        traded = self.rng.uniform(0.001, 50)
        self.volume += traded
        self.quote += traded * self.ticks * self.tick

    def fill_price(self) -> str:
        return self.text(max(1, self.ticks + self.rng.randint(-20, 20)))


def _market_symbols(rng: random.Random) -> list[_Symbol]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names: set[str] = set()
    while len(names) < _MARKET_SYMBOLS - len(_NON_ASCII):
        names.add("".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) + "USDT")
    return [_Symbol(rng, name) for name in sorted(names) + list(_NON_ASCII)]


def market_frames(kind: str, count: int) -> list[tuple[str, int]]:
    """`count` distinct frames of one kind across the whole market, with their event counts.

    Frames are timed in turn, `count` of them before any comes back: fill prices and quantities
    rarely repeat, as on a real tape, while candle opens, highs and lows repeat from one update to
    the next as in a real kline stream (the adapters remember recent candle prices).
    """
    rng = random.Random(f"bench-{kind}")
    dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))  # as the venues write
    symbols = _market_symbols(rng)
    frames: list[tuple[str, int]] = []
    for i in range(count):
        sym = rng.choice(symbols)
        sym.update()
        t = 1732400000000 + i // 2
        if kind == "binance forceOrder":
            quantity = sym.quantity()
            order = dict(_BINANCE_FORCE_ORDER["data"]["o"], s=sym.name, S=rng.choice(["SELL", "BUY"]), T=t)
            order.update(q=quantity, p=sym.fill_price(), ap=sym.fill_price(), l=quantity, z=quantity)
            data = {"e": "forceOrder", "E": t + 4, "o": order}
            frames.append((dumps({"stream": f"{sym.name.lower()}@forceOrder", "data": data}), 1))
        elif kind == "bybit allLiquidation":
            items = [
                {
                    "T": t + j,
                    "s": sym.name,
                    "S": rng.choice(["Buy", "Sell"]),
                    "v": sym.quantity(),
                    "p": sym.fill_price(),
                }
                for j in range(rng.randint(1, 5))
            ]
            frame = {"topic": f"allLiquidation.{sym.name}", "type": "snapshot", "ts": t + 50, "data": items}
            frames.append((dumps(frame), len(items)))
        elif kind == "binance kline_1m":
            k = dict(_BINANCE_KLINE["data"]["k"], s=sym.name, o=sym.text(sym.open), h=sym.text(sym.high))
            k.update(l=sym.text(sym.low), c=sym.text(sym.ticks), v=f"{sym.volume:.3f}", q=f"{sym.quote:.4f}")
            data = {"e": "kline", "E": t, "s": sym.name, "k": k}
            frames.append((dumps({"stream": f"{sym.name.lower()}@kline_1m", "data": data}), 1))
        elif kind == "okx liquidation":  # contracts of `_contract_size(sym)` coins, at the bankruptcy price
            coin = sym.name.removesuffix("USDT")
            price = sym.fill_price()
            contracts = _contracts(rng, "okx", f"{coin}-USDT-SWAP", price)
            detail = {"bkLoss": "0", "bkPx": price, "ccy": "", "posSide": "net"}
            detail |= {"side": rng.choice(["buy", "sell"]), "sz": str(contracts), "ts": str(t)}
            item = {"details": [detail], "instFamily": f"{coin}-USDT", "instId": f"{coin}-USDT-SWAP"}
            item |= {"instType": "SWAP", "uly": f"{coin}-USDT"}
            frames.append((dumps({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [item]}), 1))
        elif kind == "gate liquidates":  # signed contracts, one or more items a frame since 20260820
            coin = sym.name.removesuffix("USDT")
            result = []
            for j in range(rng.randint(1, 3)):
                price = sym.fill_price()
                size = rng.choice([-1, 1]) * _contracts(rng, "gate", f"{coin}_USDT", price)
                result.append({"price": price, "size": size, "time_ms": t + j, "contract": f"{coin}_USDT"})
            frame = {"channel": "futures.public_liquidates", "event": "update", "time": t // 1000, "time_ms": t}
            frames.append((dumps(frame | {"result": result}), len(result)))
        elif kind == "bitget liquidation":  # the amount in USDT; the largest long and short per pair per second
            item = {"symbol": sym.name, "side": rng.choice(["buy", "sell"]), "price": sym.fill_price()}
            item |= {"amount": f"{rng.uniform(5, 500_000):.6f}", "ts": str(t)}
            arg = {"instType": "usdt-futures", "topic": "liquidation"}
            frames.append((dumps({"data": [item], "arg": arg, "action": "update", "ts": t}), 1))
        else:
            item = dict(_BYBIT_KLINE["data"][0], open=sym.text(sym.open), high=sym.text(sym.high))
            item.update(low=sym.text(sym.low), close=sym.text(sym.ticks), volume=f"{sym.volume:.3f}")
            item.update(turnover=f"{sym.quote:.4f}")
            frames.append((dumps({"topic": f"kline.1.{sym.name}", "type": "snapshot", "ts": t, "data": [item]}), 1))
    return frames


# The whole-market liquidation cases: label -> (the kind of `market_frames`, the adapter).
MARKET_CASES: dict[str, tuple[str, type[ExchangeAdapter]]] = {
    "market binance forceOrder": ("binance forceOrder", BinanceAdapter),
    "market bybit allLiq x1-5": ("bybit allLiquidation", BybitAdapter),
    "market okx liquidation": ("okx liquidation", OkxAdapter),
    "market gate liquidates": ("gate liquidates", GateAdapter),
    "market bitget liquidation": ("bitget liquidation", BitgetAdapter),
}


def cases(count: int = 20_000) -> list[tuple[str, type[ExchangeAdapter], list[tuple[str, int]]]]:
    """(label, adapter class, [(frame text, events it gives)]): frames are timed in turn."""
    dumps = json.dumps
    return [
        ("binance forceOrder", BinanceAdapter, [(dumps(_BINANCE_FORCE_ORDER), 1)]),
        ("binance kline_1m", BinanceAdapter, [(dumps(_BINANCE_KLINE), 1)]),
        ("bybit allLiquidation x1", BybitAdapter, [(dumps(_bybit_liquidations(1)), 1)]),
        ("bybit allLiquidation x5", BybitAdapter, [(dumps(_bybit_liquidations(5)), 5)]),
        ("bybit kline.1", BybitAdapter, [(dumps(_BYBIT_KLINE), 1)]),
        ("market binance kline_1m", BinanceAdapter, market_frames("binance kline_1m", count)),
        ("market bybit kline.1", BybitAdapter, market_frames("bybit kline.1", count)),
    ] + [(label, cls, market_frames(kind, count)) for label, (kind, cls) in MARKET_CASES.items()]


def _contracts(rng: random.Random, exchange: str, symbol: str, price: str) -> int:
    """1 to 5,000 contracts, under the USD bound of one event."""
    worth = float(_listed(exchange, symbol).contract_size) * float(price)
    return max(1, min(rng.randint(1, 5000), int(1e8 / worth)))


@functools.cache
def _listed(exchange: str, symbol: str) -> Instrument:
    """The instrument lists the service would have: OKX and Gate count contracts (sizes read from
    the symbol's coin so that every run is the same), the others' guesses are right as they are."""
    inst = guess_instrument(exchange, symbol)
    if exchange not in ("okx", "gate"):
        return inst
    size = Decimal(10) ** (len(inst.base) % 5 - 2)  # 0.01 .. 100 coins a contract
    return dataclasses.replace(inst, size_unit=CONTRACTS, contract_size=size, listed=True)


def bench_adapter(cls: type[ExchangeAdapter], settings: Settings) -> ExchangeAdapter:
    """An adapter of `cls` as the benchmarks drive it: no connection, the instruments of `_listed`."""
    queue: asyncio.Queue[object] = asyncio.Queue()
    adapter = cls(settings, queue, StreamHealth(cls.name, "bench"), url="ws://127.0.0.1:1/bench")  # type: ignore[arg-type]
    adapter.instrument_of = _listed
    return adapter


def hot_path() -> str:
    """Which parse hot path runs: the C twins (scripts/build_native.py) or the Python rules alone."""
    return "C twins built" if validation.HOT_PATH_COMPILED else "C twins NOT built: Python only"


def bench_settings() -> Settings:
    return load_settings(env={"LIQ_NONLIVE_SOURCE": "bench", "LIQ_SYMBOLS": "ALL"}, dotenv=None)  # every symbol


def handle_all(adapter: ExchangeAdapter, frames_of_case: list[tuple[str, int]]) -> None:
    """Every frame once, each giving the events it should: a dropped one would time as a cheap one."""
    handle = adapter.handle
    for raw, expected in frames_of_case:
        if len(handle(raw, RECEIVED_MS)) != expected:
            raise SystemExit(f"{adapter.name}: frame did not produce {expected} events: {raw[:80]}")


def measure(adapter: ExchangeAdapter, frames_of_case: list[tuple[str, int]], frames: int) -> list[int]:
    """Nanoseconds per frame, one sample per frame, the case's frames in turn (`per_event` divides
    each sample by its frame's events)."""
    handle, clock = adapter.handle, time.perf_counter_ns
    handle_all(adapter, frames_of_case)
    raws = [raw for raw, _ in frames_of_case]
    n = len(raws)
    for i in range(min(frames, 2000)):
        handle(raws[i % n], RECEIVED_MS)
    gc.collect()
    samples = [0] * frames
    for i in range(frames):
        raw = raws[i % n]
        start = clock()
        handle(raw, RECEIVED_MS)
        samples[i] = clock() - start
    return samples


def per_event(samples: list[int], frames_of_case: list[tuple[str, int]]) -> list[float]:
    """Each sample of `measure` divided by the events its frame gave: the cost per liquidation."""
    counts = [n for _, n in frames_of_case]
    return [sample / counts[i % len(counts)] for i, sample in enumerate(samples)]


def _p99(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)] / 1000


def _pin_one_cpu() -> str:
    with contextlib.suppress(AttributeError, OSError):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "unpinned"


class _Reference:
    """cryptofeed's own Binance handler in its own interpreter (bench/reference_cryptofeed.py), warmed
    on the Binance market frames and timed on them one round at a time, on request: each round of a
    market case is followed by one of these, so each pair shares the machine's state of the moment."""

    def __init__(self, python: str, frames: int) -> None:
        self._dir = tempfile.TemporaryDirectory()
        path = os.path.join(self._dir.name, "binance_frames.json")
        raws = [raw for raw, _ in market_frames("binance forceOrder", frames)]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(raws + raws, f)  # warmed on the frames it then times, as `measure` does
        self._process = subprocess.Popen(
            [python, REFERENCE, path, str(len(raws)), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def round(self) -> tuple[float, float]:
        """(median, p99) in us per frame of one round."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("round\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line.startswith("ROUND "):
            raise SystemExit(f"the cryptofeed reference failed: {line!r}")
        median, p99 = line.split()[1:]
        return float(median), float(p99)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=60)
        self._dir.cleanup()


def _report_reference(pairs: dict[str, list[tuple[float, float, float, float]]]) -> None:
    """Each market case beside cryptofeed, round by round: the median of the per-pair ratios. Issue
    #10 set 2.5 us (median) and 5 us (p99) where cryptofeed's median was 2.9 us, so on any machine
    the targets read: median <= 0.862 x cryptofeed's median, p99 <= 1.724 x cryptofeed's median.
    The last column (p99 beside cryptofeed's own p99) is for information: no target names it."""
    print("beside cryptofeed's Binance handler, round by round (median of the per-round ratios):")
    print(f"{'case':<28}{'cf med us':>10}{'cf p99 us':>10}{'med / cf med':>14}{'p99 / cf med':>14}{'p99 / cf p99':>14}")
    missed: dict[str, list[str]] = {"median": [], "p99": []}
    for label, rounds in pairs.items():
        median_ratio = statistics.median(r[0] / r[2] for r in rounds)
        p99_ratio = statistics.median(r[1] / r[2] for r in rounds)
        print(
            f"{label:<28}{statistics.median(r[2] for r in rounds):>10.2f}{statistics.median(r[3] for r in rounds):>10.2f}"
            f"{median_ratio:>14.3f}{p99_ratio:>14.3f}{statistics.median(r[1] / r[3] for r in rounds):>14.3f}"
        )
        if median_ratio > TARGET_RATIO:
            missed["median"].append(label)
        if p99_ratio > TARGET_P99_RATIO:
            missed["p99"].append(label)
    for name, target in (("median", TARGET_RATIO), ("p99", TARGET_P99_RATIO)):
        verdict = f"MISSED by {', '.join(missed[name])}" if missed[name] else "met"
        print(f"beside cryptofeed, {name} / cf med <= {target:.3f}: {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_parse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000, help="timed frames per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (default 5)")
    parser.add_argument("--case", action="append", default=[], help="only cases whose label holds this (repeatable)")
    parser.add_argument(
        "--cryptofeed-python", help="an interpreter with cryptofeed: times its Binance handler before and after"
    )
    args = parser.parse_args(argv)
    pinned = _pin_one_cpu()  # before the reference starts: it inherits the CPU
    reference = _Reference(args.cryptofeed_python, args.frames) if args.cryptofeed_python else None
    pairs: dict[str, list[tuple[float, float, float, float]]] = {}
    settings = bench_settings()
    print(f"parse + normalise per frame: {args.rounds} rounds x {args.frames} frames per case, {pinned}, {hot_path()}")
    print("p99 best: the quietest round (other processes preempt us on a shared machine); p99 all: every sample;")
    print("cpu us: process CPU time per frame, which time spent preempted does not inflate")
    print("/ev: per event (each frame's time divided by its events), the issue #10 target on market liquidations")
    print(
        f"{'case':<28}{'median us':>11}{'p99 best':>10}{'p99 all':>10}{'cpu us':>8}{'frames/s':>11}{'events/s':>11}"
        f"{'med/ev':>8}{'p99/ev':>8}"
    )
    worst = 0.0
    missed: list[str] = []
    for label, cls, frames_of_case in cases(args.frames):
        if args.case and not any(part in label for part in args.case):
            continue
        adapter = bench_adapter(cls, settings)
        expected = sum(n for _, n in frames_of_case) / len(frames_of_case)  # events per frame
        cpu_start = time.process_time_ns()
        rounds = []
        for _ in range(args.rounds):
            rounds.append(measure(adapter, frames_of_case, args.frames))
            if reference is not None and label in MARKET_CASES:
                ours = per_event(rounds[-1], frames_of_case)
                pairs.setdefault(label, []).append((statistics.median(ours) / 1000, _p99(ours), *reference.round()))
        # CPU time spent per frame (warm-up included): not inflated by time other processes hold the core.
        warm = len(frames_of_case) + min(args.frames, 2000)
        cpu_us = (time.process_time_ns() - cpu_start) / (args.rounds * (args.frames + warm)) / 1000
        samples = [s for r in rounds for s in r]
        median_us = statistics.median(samples) / 1000
        best_p99 = min(_p99(r) for r in rounds)
        per_s = 1e9 / statistics.median(samples)
        worst = max(worst, best_p99 / expected)
        events = [per_event(r, frames_of_case) for r in rounds]
        median_ev = statistics.median(e for r in events for e in r) / 1000
        p99_ev = min(_p99(r) for r in events)  # the quietest round, as "p99 best"
        print(
            f"{label:<28}{median_us:>11.2f}{best_p99:>10.2f}{_p99(samples):>10.2f}{cpu_us:>8.2f}"
            f"{per_s:>11,.0f}{per_s * expected:>11,.0f}{median_ev:>8.2f}{p99_ev:>8.2f}"
        )
        if label in MARKET_CASES and (median_ev > TARGET_MEDIAN_EVENT_US or p99_ev > TARGET_P99_EVENT_US):
            missed.append(label)
    if reference is not None:
        reference.close()
        _report_reference(pairs)
    verdict = "met" if worst <= TARGET_P99_US else "MISSED"
    print(f"worst p99 (best round) per event {worst:.2f} us: target {TARGET_P99_US:.0f} us {verdict}")
    print(
        f"market liquidations per event, absolute on this machine: median <= {TARGET_MEDIAN_EVENT_US} us, "
        f"p99 <= {TARGET_P99_EVENT_US} us: " + (f"MISSED by {', '.join(missed)}" if missed else "met")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
