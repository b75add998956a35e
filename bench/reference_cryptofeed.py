"""The reference the parse target was set against: cryptofeed's own Binance USD-M handler.

    <python with cryptofeed> bench/reference_cryptofeed.py FRAMES.json WARM MEASURED
    <python with cryptofeed> bench/reference_cryptofeed.py FRAMES.json WARM serve

Runs `BinanceFutures.message_handler` (JSON decode, two Decimals, the symbol map, its Liquidation
object; no checks, no key) on the first WARM frames of the file, then, when MEASURED is 1, on the
rest. Run by `bench.bench_parse_instructions --cryptofeed-python` under callgrind, twice (MEASURED 0
and 1), so the difference is the cost of the measured frames alone. With `serve` it times the rest
instead, frame by frame with `perf_counter_ns` as `bench.bench_parse` times the project, one round
per request on stdin (`bench.bench_parse --cryptofeed-python` alternates its rounds with these). Imports nothing of the project:
it runs in any interpreter that has cryptofeed (`pip install cryptofeed` in a scratch venv).
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any


def main(path: str, warm: int, measured: bool, serve: bool = False) -> None:
    from cryptofeed.defines import LIQUIDATIONS
    from cryptofeed.exchanges.binance_futures import BinanceFutures

    with open(path, encoding="utf-8") as f:
        frames: list[str] = json.load(f)
    # Built without __init__: it fetches the venue's symbol list over the network.
    feed = object.__new__(BinanceFutures)
    feed.requires_authentication = False
    feed.ignore_invalid_instruments = True
    symbols = {json.loads(frame)["data"]["o"]["s"] for frame in frames}
    feed.exchange_symbol_mapping = {s: f"{s.removesuffix('USDT')}-USDT-PERP" for s in symbols}
    received: list[Any] = []

    async def keep_last(liquidation: Any, _receipt: float) -> None:
        received[:] = [liquidation]

    feed.callbacks = {LIQUIDATIONS: [keep_last]}

    def handle(frame: str) -> None:
        step = feed.message_handler(frame, None, 1.0)  # a coroutine that never waits: one send runs it
        try:
            step.send(None)
        except StopIteration:
            pass

    for frame in frames[:warm]:
        handle(frame)
    gc.collect()  # as the project's side does
    if serve:
        _serve(handle, frames[warm:])
    elif measured:
        for frame in frames[warm:]:
            handle(frame)
    if not received:
        raise SystemExit("cryptofeed produced no liquidation")
    print("EVENTS", len(frames) - warm)


def _serve(handle: Any, frames: list[str]) -> None:
    """One timed round per "round" line on stdin, answered "ROUND <median us> <p99 us>", one sample
    per frame, until stdin closes: `bench.bench_parse` runs a round of its own between two of ours,
    so each pair of rounds shares the machine's state of the moment."""
    clock = time.perf_counter_ns
    for line in sys.stdin:
        if line.strip() != "round":
            continue
        samples = []
        for frame in frames:
            start = clock()
            handle(frame)
            samples.append(clock() - start)
        samples.sort()
        p99 = samples[max(0, int(len(samples) * 0.99) - 1)] / 1000
        print("ROUND", statistics.median(samples) / 1000, p99, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[3] == "serve")
