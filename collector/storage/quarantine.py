"""The quarantine: rows PostgreSQL refused for their data, set aside one per line, never retried.

When TimescaleDB refuses a batch for what it holds (a NUL in a text, a value too long for an
index, a number out of range...), the writer splits the batch until the rows at fault are alone
and commits everything else (see `TimescaleWriter.write`). Each row at fault lands here, in
`quarantine.ndjson` beside the spool, one JSON object per line:

    {"at_ms": 1795000020000, "kind": "liquidations", "sqlstate": "22021",
     "reason": "invalid byte sequence for encoding \\"UTF8\\": 0x00", "batch": {...}}

`batch` is the row in the spool's own format (`decode_batch` reads it back), so a row can be
looked at, repaired and fed again. Spool lines that no longer decode come here too, as `kind`
"spool_line" with the raw text in `line`. The file is append-only and never read by the
collector, except to count its lines at start.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from collector.health import now_ms
from collector.storage.spool import Batch, disk_error_text, encode_batch

log = logging.getLogger("collector.quarantine")

QUARANTINE_FILE = "quarantine.ndjson"
# Rows already set aside by this run: replaying a spool chunk twice (an outage in the middle of
# isolating its bad rows) must not set them aside twice.
_SEEN_MAX = 100_000


@dataclass
class Refused:
    """One row (a batch of exactly one item) that PostgreSQL refused, and why."""

    batch: Batch
    reason: str
    sqlstate: str | None


class Quarantine:
    """Blocking file operations; the pipeline calls them through `asyncio.to_thread`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / QUARANTINE_FILE
        self.rows = _count_lines(self.path)  # rows in the file, this run's and earlier ones
        self.last_reason = ""
        self.error = ""
        self._seen: set[str] = set()

    def add(self, refused: list[Refused]) -> list[Refused]:
        """Append rows not set aside yet by this run; return those. A disk error is logged with
        the rows themselves (they are then only in the log) and the rows still count."""
        fresh: list[tuple[Refused, str]] = []
        for r in refused:
            row = encode_batch(r.batch)
            if row not in self._seen:
                self._seen.add(row)
                fresh.append((r, row))
        if len(self._seen) > _SEEN_MAX:
            self._seen.clear()
        if not fresh:
            return []
        at = now_ms()
        lines = [_line(at, r.batch.kind(), r.sqlstate, r.reason, batch=json.loads(row)) for r, row in fresh]
        self._write(lines)
        self.rows += len(fresh)
        self.last_reason = fresh[-1][0].reason
        return [r for r, _ in fresh]

    def add_lines(self, lines: list[str], reason: str) -> None:
        """Spool lines that no longer decode: kept verbatim."""
        at = now_ms()
        out = [_line(at, "spool_line", None, reason, line=line) for line in lines]
        self._write(out)
        self.rows += len(lines)
        self.last_reason = reason

    def _write(self, lines: list[str]) -> None:
        data = "".join(lines).encode()
        try:
            with self.path.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.error = ""
        except OSError as exc:
            self.error = disk_error_text(exc)
            log.error("cannot write the quarantine file %s (%s); the rows follow:", self.path, self.error)
            for line in lines:
                log.error("quarantined row: %s", line.rstrip("\n"))  # JSON: one escaped line each


def _line(at_ms: int, kind: str, sqlstate: str | None, reason: str, **rest: object) -> str:
    fields = {"at_ms": at_ms, "kind": kind, "sqlstate": sqlstate, "reason": reason, **rest}
    return json.dumps(fields, separators=(",", ":")) + "\n"  # ASCII: control characters escaped


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0
