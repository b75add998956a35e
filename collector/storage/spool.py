"""The local append-only spool: batches that TimescaleDB could not take, replayed in order later.

One NDJSON file, one line per batch, fsynced per append, so a batch the writer has spooled
survives a crash or SIGKILL. A crash can leave a torn last line; opening the spool cuts it off
(that batch was never acknowledged as spooled, so it is still in memory or lost with the process).
The file is bounded by `max_bytes`: `append` raises `SpoolFull` instead of dropping anything and
the caller applies backpressure. A disk error (full filesystem, quota, I/O error, read-only) is
the same for the caller: `append` cuts the torn append back off, so the file stays a sequence of
whole lines, and raises `SpoolError`; the batch stays with the caller, which retries. Replay reads
from the front; when everything was written the file is truncated. Replaying a line twice (crash
during replay) is harmless: every write is idempotent.
"""

from __future__ import annotations

import contextlib
import errno as errno_names
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


class SpoolError(RuntimeError):
    """The disk refused a spool operation (ENOSPC, EDQUOT, EIO, EROFS...); the file is consistent."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def disk_error_text(exc: OSError) -> str:
    """`[Errno 28] ENOSPC: No space left on device`: the number, its name and the system's words."""
    name = errno_names.errorcode.get(exc.errno or 0, "")
    words = exc.strerror or str(exc)
    return f"[Errno {exc.errno}] {name}: {words}" if exc.errno else words


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

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, in write order: liquidations, candles, statuses, cascades, then flags.

        Writing the first half and then the second gives the same result as writing the whole: a
        flag always comes after the liquidations it marks, and upserts keep their order.
        """
        items = [(kind, x) for kind in BATCH_KINDS for x in getattr(self, kind)]
        half = len(items) // 2
        return _from_items(items[:half]), _from_items(items[half:])

    def kind(self) -> str:
        """The kind of the first item ('liquidations', ..., 'flags'); '' for an empty batch."""
        return next((kind for kind in BATCH_KINDS if getattr(self, kind)), "")


BATCH_KINDS = ("liquidations", "candles", "statuses", "cascades", "flags")


def _from_items(items: list[tuple[str, Any]]) -> Batch:
    batch = Batch()
    for kind, x in items:
        getattr(batch, kind).append(x)
    return batch


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
        """Raises OSError when the directory cannot be created or the file cannot be opened."""
        self.path = directory / SPOOL_FILE
        self.max_bytes = max_bytes
        self.bytes = 0
        self.pending_events = 0
        self.full_refusals = 0
        self.disk_errors = 0
        self.error = ""  # the last disk error's text while it lasts, "" once an append succeeds
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644))  # writable, or fail at start
        self._recover()

    @property
    def empty(self) -> bool:
        return self.bytes == 0

    def state(self) -> dict[str, Any]:
        status = "empty" if self.empty else ("full" if self.full_refusals and self._is_near_full() else "pending")
        return {
            "pending_events": self.pending_events,
            "bytes": self.bytes,
            "state": status,
            "full": self.full_refusals,
            "error": self.error,
        }

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
        """Append one batch and fsync it; `SpoolFull` or `SpoolError` leave the file as it was."""
        data = (encode_batch(batch) + "\n").encode()
        if self.bytes + len(data) > self.max_bytes:
            self.full_refusals += 1
            raise SpoolFull(f"spool full ({self.bytes} of {self.max_bytes} bytes), batch of {len(batch)} events waits")
        end = self.bytes + len(data)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                # Written at the known end, not in append mode: whatever a failed append left
                # behind is overwritten, then cut off.
                view = memoryview(data)
                at = self.bytes
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
                if os.fstat(fd).st_size > end:
                    os.ftruncate(fd, end)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self.bytes)  # the torn append goes; the next one overwrites it anyway
                raise
            finally:
                os.close(fd)
        except OSError as exc:
            self.disk_errors += 1
            self.error = disk_error_text(exc)
            raise SpoolError(f"cannot write the spool {self.path}: {self.error}", exc.errno) from exc
        self.error = ""
        self.bytes = end
        self.pending_events += len(batch)

    def read_chunk(self, offset: int, max_events: int) -> tuple[Batch, int, list[str]]:
        """Batches from `offset` on, merged up to about `max_events`, the offset after them, and the
        lines that no longer decode (set aside by the caller instead of blocking the replay)."""
        merged = Batch()
        undecodable: list[str] = []
        with self.path.open("rb") as f:
            f.seek(offset)
            while len(merged) < max_events and offset < self.bytes:
                line = f.readline()
                if not line:
                    break
                offset += len(line)
                try:
                    merged.extend(decode_batch(line))
                except Exception:  # any decoding failure: the line is kept aside, not lost
                    undecodable.append(line.decode("utf-8", "backslashreplace").rstrip("\n"))
        return merged, offset, undecodable

    def clear(self) -> None:
        """Everything was replayed: start an empty file (OSError when the disk refuses)."""
        with self.path.open("r+b") as f:
            f.truncate(0)
            os.fsync(f.fileno())
        self.bytes = 0
        self.pending_events = 0
