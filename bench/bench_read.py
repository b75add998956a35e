"""The read path of one venue connection: CPU per frame, from the socket to the bounded queue.

    .venv/bin/python -m bench.bench_read [--rate 4000] [--seconds 10] [--symbols 100] [--rounds 3]

A fake Binance server (collector.replay_server, in a process of its own so that its CPU is not
counted) pushes 1-minute kline frames (`bench.market_feed`, as bench_market writes them) of
`--symbols` symbols at `--rate` frames a second, in 10-ms ticks, on one combined-stream connection
(an explicit list of 100 symbols is 200 streams, the adapter's most on one connection; Binance
pushes each open minute every 250 ms, so the whole market's 600 symbols are ~2,400 frames a
second). The real `BinanceAdapter` reads them into a bounded queue drained at once. Printed per
round: frames received per second, the adapter process's CPU in % of one core and in microseconds
per frame (websockets' framing, the adapter's session loop, parse and normalise, the queue).
Between bursts this is most of the collector's work (bench.bench_market's quiet phase).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from multiprocessing.queues import SimpleQueue

from bench.market_feed import binance_kline
from collector.exchanges.binance import BinanceAdapter
from collector.health import StreamHealth
from collector.replay_server import BinanceServer
from common.config import load_settings
from common.events import Event

TICK_S = 0.01
WARM_S = 1.0


def symbols(n: int) -> list[str]:
    return [f"C{i:04d}USDT" for i in range(n)]


def serve(port: SimpleQueue[int], rate: int, seconds: float, n_symbols: int) -> None:
    """The fake venue: waits for the adapter, then pushes `rate` frames a second for `seconds`."""

    async def main() -> None:
        now = 1_732_400_040_000
        texts = [binance_kline(s, now + tick, tick)[1] for tick in range(8) for s in symbols(n_symbols)]
        async with BinanceServer() as srv:
            port.put(srv.port)
            await srv.wait_connected(1, within=30)
            per_tick, sent, start = max(1, round(rate * TICK_S)), 0, time.monotonic()
            while time.monotonic() - start < seconds:
                tick = time.monotonic()
                for _ in range(per_tick):
                    await srv.push_raw(texts[sent % len(texts)])
                    sent += 1
                await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - tick)))

    asyncio.run(main())


async def read_round(rate: int, seconds: float, n_symbols: int) -> tuple[float, float, float]:
    """(frames received per second, CPU % of one core, CPU us per frame) of one round."""
    ports: SimpleQueue[int] = multiprocessing.SimpleQueue()
    venue = multiprocessing.Process(target=serve, args=(ports, rate, WARM_S + seconds + 2, n_symbols))
    venue.start()
    try:
        port = await asyncio.to_thread(ports.get)
        url = f"ws://127.0.0.1:{port}{BinanceServer.path}"
        env = {
            "LIQ_EXCHANGES": "binance",
            "LIQ_SYMBOLS": ",".join(symbols(n_symbols)),
            "LIQ_BINANCE_WS_URL": url,
            "LIQ_NONLIVE_SOURCE": "bench",
        }
        settings = load_settings(env=env, dotenv=None)
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.queue_size)
        health = StreamHealth(BinanceAdapter.name, settings.source_for(url))
        adapter = BinanceAdapter(settings, queue, health, url=url)
        stop, flowing = asyncio.Event(), asyncio.Event()

        async def drain() -> None:
            while True:
                await queue.get()
                flowing.set()

        tasks = [asyncio.create_task(adapter.run(stop)), asyncio.create_task(drain())]
        await asyncio.wait_for(flowing.wait(), timeout=30)
        await asyncio.sleep(WARM_S)
        frames0, cpu0, wall0 = health.messages, time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        frames1, cpu1, wall1 = health.messages, time.process_time(), time.monotonic()
        stop.set()
        await asyncio.wait_for(tasks[0], timeout=10)
        tasks[1].cancel()
    finally:
        venue.join(timeout=30)
        if venue.is_alive():
            venue.kill()
    frames, cpu, wall = frames1 - frames0, cpu1 - cpu0, wall1 - wall0
    return frames / wall, 100 * cpu / wall, 1e6 * cpu / max(frames, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_read", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=4000, help="frames a second (default 4000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round (default 10)")
    parser.add_argument("--symbols", type=int, default=100, help="symbols on the connection (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    print(
        f"one Binance connection, {args.symbols} kline streams, {args.rate:,} frames/s pushed, {args.seconds:g} s a round"
    )
    per_frame = []
    for r in range(1, args.rounds + 1):
        received, cpu, us = asyncio.run(read_round(args.rate, args.seconds, args.symbols))
        per_frame.append(us)
        print(
            f"round {r}: {received:,.0f} frames/s received; adapter process CPU {cpu:.1f} % of one core = {us:.1f} us per frame"
        )
    print(f"median {statistics.median(per_frame):.1f} us per frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
