"""The local append-only spool: batches that TimescaleDB could not take, replayed in order later.

One NDJSON file, one line per batch, fsynced per append, so a batch the writer has spooled
survives a crash or SIGKILL. A crash can leave a torn last line; opening the spool cuts it off
(that batch was never acknowledged as spooled, so it is still in memory or lost with the process).
The file is bounded by `max_bytes`: `append` raises `SpoolFull` instead of dropping anything and
the caller applies backpressure. Replay reads from the front; when everything was written the
file is truncated. Replaying a line twice (crash during replay) is harmless: every write is
idempotent.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from common.events import Candle, Cascade, Liquidation, Side, StreamStatus
from common.live_view import decode_cascade, encode_cascade

log = logging.getLogger("collector.spool")

SPOOL_FILE = "spool.ndjson"


class SpoolFull(RuntimeError):
    """Appending would exceed the spool's byte bound."""


@dataclass
class Batch:
    """What the router hands to the writers: events of one round plus cascade changes."""

    liquidations: list[Liquidation] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    statuses: list[StreamStatus] = field(default_factory=list)
    cascades: list[Cascade] = field(default_factory=list)
    flags: list[tuple[int, int, int]] = field(default_factory=list)  # (cascade id, event key, time ms)

    def __len__(self) -> int:
        return len(self.liquidations) + len(self.candles) + len(self.statuses) + len(self.cascades) + len(self.flags)

    def extend(self, other: Batch) -> None:
        self.liquidations.extend(other.liquidations)
        self.candles.extend(other.candles)
        self.statuses.extend(other.statuses)
        self.cascades.extend(other.cascades)
        self.flags.extend(other.flags)


def encode_batch(batch: Batch) -> str:
    return json.dumps(
        {
            "n": len(batch),
            "l": [_liq_row(e) for e in batch.liquidations],
            "c": [_candle_row(c) for c in batch.candles],
            "s": [
                [s.exchange, s.connection_id, s.state, s.at_ms, list(s.symbols), s.source, s.reason]
                for s in batch.statuses
            ],
            "x": [encode_cascade(c) for c in batch.cascades],
            "f": batch.flags,
        },
        separators=(",", ":"),
    )


def decode_batch(line: str | bytes) -> Batch:
    d = json.loads(line)
    return Batch(
        liquidations=[_liq_from_row(r) for r in d["l"]],
        candles=[_candle_from_row(r) for r in d["c"]],
        statuses=[StreamStatus(r[0], r[1], r[2], int(r[3]), tuple(r[4]), r[5], r[6]) for r in d["s"]],
        cascades=[decode_cascade(x) for x in d["x"]],
        flags=[(int(a), int(b), int(c)) for a, b, c in d["f"]],
    )


def _liq_row(e: Liquidation) -> list[Any]:
    return [
        e.exchange,
        e.symbol,
        str(e.side),
        f"{e.quantity:f}",
        f"{e.price:f}",
        f"{e.value_usd:f}",
        e.time_ms,
        e.received_ms,
        e.raw_side,
        e.source,
        e.sampled,
        e.key,
        e.cascade_id,
    ]


def _liq_from_row(r: list[Any]) -> Liquidation:
    return Liquidation(
        exchange=r[0],
        symbol=r[1],
        side=Side(r[2]),
        quantity=Decimal(r[3]),
        price=Decimal(r[4]),
        value_usd=Decimal(r[5]),
        time_ms=int(r[6]),
        received_ms=int(r[7]),
        raw_side=r[8],
        source=r[9],
        sampled=bool(r[10]),
        key=int(r[11]),
        cascade_id=None if r[12] is None else int(r[12]),
    )


def _candle_row(c: Candle) -> list[Any]:
    values = (c.open, c.high, c.low, c.close, c.volume, c.quote_volume)
    return [c.exchange, c.symbol, c.open_ms, *(f"{v:f}" for v in values), c.closed, c.received_ms, c.source]


def _candle_from_row(r: list[Any]) -> Candle:
    o, h, lo, cl, v, q = (Decimal(x) for x in r[3:9])
    return Candle(r[0], r[1], int(r[2]), o, h, lo, cl, v, q, bool(r[9]), int(r[10]), r[11])


class Spool:
    """Blocking file operations; the async writer calls them through `asyncio.to_thread`."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.path = directory / SPOOL_FILE
        self.max_bytes = max_bytes
        self.bytes = 0
        self.pending_events = 0
        self.full_refusals = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    @property
    def empty(self) -> bool:
        return self.bytes == 0

    def state(self) -> dict[str, Any]:
        status = "empty" if self.empty else ("full" if self.full_refusals and self._is_near_full() else "pending")
        return {"pending_events": self.pending_events, "bytes": self.bytes, "state": status, "full": self.full_refusals}

    def _is_near_full(self) -> bool:
        return self.bytes > self.max_bytes * 0.9

    def _recover(self) -> None:
        """Count what a previous process left; cut a torn last line."""
        if not self.path.exists():
            return
        good = 0
        events = 0
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    events += int(json.loads(line)["n"])
                except (ValueError, KeyError, TypeError):
                    break
                good += len(line)
        size = self.path.stat().st_size
        if good < size:
            log.warning("spool: cutting %d bytes of a torn last batch in %s", size - good, self.path)
            with self.path.open("r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        self.bytes = good
        self.pending_events = events
        if good:
            log.info("spool: %d events (%d bytes) left by a previous run, replaying first", events, good)

    def append(self, batch: Batch) -> None:
        data = (encode_batch(batch) + "\n").encode()
        if self.bytes + len(data) > self.max_bytes:
            self.full_refusals += 1
            raise SpoolFull(f"spool full ({self.bytes} of {self.max_bytes} bytes), batch of {len(batch)} events waits")
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.bytes += len(data)
        self.pending_events += len(batch)

    def read_chunk(self, offset: int, max_events: int) -> tuple[Batch, int]:
        """Batches from `offset` on, merged up to about `max_events`, and the offset after them."""
        merged = Batch()
        with self.path.open("rb") as f:
            f.seek(offset)
            while len(merged) < max_events:
                line = f.readline()
                if not line:
                    break
                offset += len(line)
                merged.extend(decode_batch(line))
        return merged, offset

    def clear(self) -> None:
        """Everything was replayed: start an empty file."""
        with self.path.open("r+b") as f:
            f.truncate(0)
            os.fsync(f.fileno())
        self.bytes = 0
        self.pending_events = 0
