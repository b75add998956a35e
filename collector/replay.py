"""Serve a recorded session to collectors, at N times real time, on local fake exchanges.

    python -m collector.replay FILE --speed N [--host 127.0.0.1 --binance-port P --bybit-port Q --loop --rebase]

FILE is NDJSON as written by `collector.record`, one frame a line:
`{"recv_ms": 1732400000200, "exchange": "binance" | "bybit", "raw": "<frame text as received>"}`.
Two servers from `collector.replay_server` speak the exchanges' protocols; the two URLs to set
as LIQ_BINANCE_WS_URL / LIQ_BYBIT_WS_URL are printed first (one `NAME=value` per line). Each
exchange's frames start when its first client has connected (Bybit: subscribed) and keep the
recorded spacing divided by `--speed` (0: as fast as possible). Frames reach only the clients
subscribed to their stream or topic. `--loop` starts over at the end; otherwise the servers stay
up, idle, until SIGINT/SIGTERM. `--rebase` moves every exchange time in the frames by whole
minutes so that the session starts now (recorded times are old, and old events never show in the
live 60-minute view; at speeds above 1 the times run ahead of the clock and events more than 5
minutes ahead get dropped as `future_time`). Collectors label what they get with LIQ_NONLIVE_SOURCE
("replay"), never "live", because these are not the real hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.replay_server import BinanceServer, BybitServer, FakeServer

log = logging.getLogger("collector.replay")


@dataclass(frozen=True, slots=True)
class Recorded:
    recv_ms: int
    exchange: str
    raw: str


def load_session(path: Path) -> list[Recorded]:
    """Read the NDJSON file; a malformed line stops with its line number (the file is ours to fix)."""
    frames: list[Recorded] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                frame = Recorded(int(obj["recv_ms"]), str(obj["exchange"]), str(obj["raw"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a recorded frame: {exc}") from None
            if frame.exchange not in ("binance", "bybit"):
                raise ValueError(f"{path}:{lineno}: unknown exchange {frame.exchange!r}")
            frames.append(frame)
    return frames


# Exchange time fields of both venues' frames (Binance E/T/t, Bybit ts/T/start/end/timestamp).
_TIME_KEYS = frozenset({"E", "T", "t", "ts", "start", "end", "timestamp"})
_MINUTE_MS = 60_000


def rebase(raw: str, offset_ms: int) -> str:
    """The frame with every exchange time moved by `offset_ms`; text that is not JSON is unchanged."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw
    return json.dumps(_shifted(obj, offset_ms), separators=(",", ":"))


def _shifted(obj: Any, offset_ms: int) -> Any:
    if isinstance(obj, dict):
        return {
            k: v + offset_ms if k in _TIME_KEYS and type(v) is int else _shifted(v, offset_ms) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_shifted(v, offset_ms) for v in obj]
    return obj


async def play(
    server: FakeServer, frames: Sequence[Recorded], speed: float, *, loop: bool, rebased: bool = False
) -> int:
    """Push `frames` to `server`'s clients with their recorded spacing; return how many were sent."""
    sent = 0
    if not frames:
        return sent
    await server.wait_for(lambda: bool(server.ready_connections), within=10**9)
    clock = asyncio.get_running_loop()
    while True:
        start, first_ms = clock.time(), frames[0].recv_ms
        # Whole minutes keep candle open times on minute boundaries.
        offset = (time.time_ns() // 1_000_000 - first_ms) // _MINUTE_MS * _MINUTE_MS if rebased else 0
        for frame in frames:
            if speed > 0:
                due = start + (frame.recv_ms - first_ms) / 1000 / speed
                await asyncio.sleep(max(0.0, due - clock.time()))
            sent += 1 if await server.push(rebase(frame.raw, offset) if offset else frame.raw) else 0
        log.info("%s: %d frames served", server.path, len(frames))
        if not loop:
            return sent


async def serve_session(
    frames: Sequence[Recorded],
    speed: float,
    *,
    host: str = "127.0.0.1",
    binance_port: int = 0,
    bybit_port: int = 0,
    loop: bool = False,
    rebased: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Run both servers and play the session until `stop` is set (or forever)."""
    stop = stop or asyncio.Event()
    async with BinanceServer(host, binance_port) as binance, BybitServer(host, bybit_port) as bybit:
        print(f"LIQ_BINANCE_WS_URL={binance.url}", flush=True)
        print(f"LIQ_BYBIT_WS_URL={bybit.url}", flush=True)
        by_exchange = {name: [f for f in frames if f.exchange == name] for name in ("binance", "bybit")}
        players = [
            asyncio.create_task(play(binance, by_exchange["binance"], speed, loop=loop, rebased=rebased)),
            asyncio.create_task(play(bybit, by_exchange["bybit"], speed, loop=loop, rebased=rebased)),
        ]
        try:
            await stop.wait()
        finally:
            for task in players:
                task.cancel()
            for task in players:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m collector.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="NDJSON session written by collector.record")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time; 0 = no delays (default 1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--binance-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--bybit-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument(
        "--rebase",
        action="store_true",
        help="move exchange times by whole minutes so the session starts now (live-looking; best with --speed 1)",
    )
    args = parser.parse_args(argv)
    if args.speed < 0:
        parser.error("--speed must be >= 0")
    return args


async def _main(args: argparse.Namespace) -> None:
    frames = load_session(args.file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve_session(
        frames,
        args.speed,
        host=args.host,
        binance_port=args.binance_port,
        bybit_port=args.bybit_port,
        loop=args.loop,
        rebased=args.rebase,
        stop=stop,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        asyncio.run(_main(args))
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
