"""Per-stream health, kept in memory by the adapters and published to Redis by the live writer.

Adapters update a `StreamHealth` on every message (cheap attribute writes); the Redis writer takes
`snapshot()` about once a second. Drops are counted by reason and logged with the raw frame at a
bounded rate, so bad input is visible without flooding the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_RAW_LOG_CHARS = 500


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class StreamHealth:
    exchange: str
    source: str
    connected: bool = False
    connected_since_ms: int | None = None
    last_message_ms: int | None = None
    messages: int = 0
    events: int = 0
    reconnects: int = 0
    last_error: str = ""
    last_error_ms: int | None = None
    drops: Counter[str] = field(default_factory=Counter)
    log_interval_s: float = 10.0
    _last_drop_log: dict[str, float] = field(default_factory=dict, repr=False)
    _suppressed: Counter[str] = field(default_factory=Counter, repr=False)

    def drop(self, reason: str, raw: str | bytes | None, log: logging.Logger) -> None:
        """Count a dropped frame or event; log it with its raw text at most once per interval per reason."""
        self.drops[reason] += 1
        now = time.monotonic()
        last = self._last_drop_log.get(reason)
        if last is not None and now - last < self.log_interval_s:
            self._suppressed[reason] += 1
            return
        self._last_drop_log[reason] = now
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
        more = self._suppressed.pop(reason, 0)
        log.warning(
            "%s: dropped (%s)%s: %s",
            self.exchange,
            reason,
            f" (+{more} more since last log)" if more else "",
            text[:_RAW_LOG_CHARS],
        )

    def error(self, message: str) -> None:
        self.last_error = message[:300]
        self.last_error_ms = now_ms()

    def snapshot(self) -> dict[str, Any]:
        now = now_ms()
        return {
            "exchange": self.exchange,
            "source": self.source,
            "connected": self.connected,
            "connected_since_ms": self.connected_since_ms,
            "last_message_ms": self.last_message_ms,
            "last_message_age_s": None
            if self.last_message_ms is None
            else round((now - self.last_message_ms) / 1000, 1),
            "messages": self.messages,
            "events": self.events,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            "drops": dict(self.drops),
            "at_ms": now,
        }
