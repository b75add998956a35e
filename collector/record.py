"""Record the raw frames of the configured exchange streams to NDJSON, for `collector.replay`.

    python -m collector.record --out FILE [--minutes M]

Connects like the collector (same adapters, reconnects, pings, LIQ_EXCHANGES, LIQ_SYMBOLS and the
LIQ_*_WS_URL endpoints) and appends one line per data frame:
`{"recv_ms": <our receive time>, "exchange": "binance" | "bybit", "raw": "<frame text>"}`.
Subscription acks, pongs and request replies are not data and are left out; malformed frames
are kept (a replay should reproduce them). Stops after M minutes (default: until SIGINT/SIGTERM)
and prints how many frames it wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from collector.exchanges import ADAPTERS
from collector.health import StreamHealth
from common.config import ConfigError, Settings, load_settings
from common.events import Event

log = logging.getLogger("collector.record")


def is_control(raw: str | bytes) -> bool:
    """True for acks, pongs and request replies: frames that carry no market data."""
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    if type(msg) is not dict:
        return False
    return ("op" in msg and "topic" not in msg) or ("result" in msg and "id" in msg and "data" not in msg)


class _Sink:
    """Writes recorded lines; one per data frame."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.frames = 0

    def hook(self, exchange: str) -> Callable[[str | bytes, int], None]:
        def _write(raw: str | bytes, received_ms: int) -> None:
            if is_control(raw):
                return
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            line = json.dumps({"recv_ms": received_ms, "exchange": exchange, "raw": text}, separators=(",", ":"))
            self.out.write(line + "\n")
            self.out.flush()
            self.frames += 1

        return _write


async def _discard(queue: asyncio.Queue[Event]) -> None:
    while True:
        await queue.get()


async def record(settings: Settings, out: TextIO, *, seconds: float | None, stop: asyncio.Event | None = None) -> int:
    """Record until `seconds` passed or `stop` is set; return the number of frames written."""
    stop = stop or asyncio.Event()
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.queue_size)
    sink = _Sink(out)
    tasks: list[asyncio.Task[None]] = []
    for exchange in settings.exchanges:
        url = settings.ws_url(exchange)
        adapter = ADAPTERS[exchange](settings, queue, StreamHealth(exchange, settings.source_for(url)))
        adapter.raw_hook = sink.hook(exchange)
        log.info("recording %s from %s", exchange, adapter.url)
        tasks.append(asyncio.create_task(adapter.run(stop)))
    drain = asyncio.create_task(_discard(queue))
    try:
        if seconds is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
    return sink.frames


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m collector.record", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="NDJSON file to append to")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (default: until a signal)")
    args = parser.parse_args(argv)
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be > 0")
    return args


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    seconds = None if args.minutes is None else args.minutes * 60
    with args.out.open("a", encoding="utf-8") as out:
        return await record(settings, out, seconds=seconds, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    frames = asyncio.run(_main(args, settings))
    print(f"recorded {frames} frames to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
