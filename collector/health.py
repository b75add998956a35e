"""Per-stream health, kept in memory by the adapters and published to Redis by the live writer.

Adapters update a `StreamHealth` on every message (cheap attribute writes); the Redis writer takes
`snapshot()` about once a second. Drops are counted by reason and logged with the raw frame at a
bounded rate, so bad input is visible without flooding the log.

Venue text reaches the log only through `one_line()`: control characters, line breaks, lone
surrogates and backslashes are escaped as in `repr()` (`\\n`, `\\x00`, `\\ud800`, `\\\\`), so a
record is always one line, and its length is bounded.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_RAW_LOG_CHARS = 500
_ERROR_CHARS = 300
_DETAIL_CHARS = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def one_line(text: str, limit: int = _RAW_LOG_CHARS) -> str:
    """`text` fit for one log line: unprintable characters escaped, at most about `limit` characters.

    Printable text (any script: `币安人生USDT` stays as it is) passes unchanged; everything else
    (control characters, line and paragraph separators, lone surrogates, format characters such
    as a right-to-left override) and the backslash itself are written as `repr()` writes them.
    Longer text is cut and ends with "... (N chars)".
    """
    cut = text[:limit]
    if not cut.isprintable() or "\\" in cut:
        cut = "".join(ch if ch.isprintable() and ch != "\\" else _escaped(ch) for ch in cut)
    if len(text) <= limit and len(cut) <= limit:
        return cut
    return f"{cut[:limit]}... ({len(text)} chars)"


def _escaped(ch: str) -> str:
    return "\\\\" if ch == "\\" else repr(ch)[1:-1]


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
    # The adapter's shape (collector.exchanges): connections open now, topics (Binance streams, Bybit
    # topics) subscribed now, instruments followed, and the topics the venue refused, with its reason.
    connections: int = 0
    topics: int = 0
    instruments: int = 0
    refusals: int = 0
    refused_topics: dict[str, str] = field(default_factory=dict)
    log_interval_s: float = 10.0
    _last_drop_log: dict[str, float] = field(default_factory=dict, repr=False)
    _suppressed: Counter[str] = field(default_factory=Counter, repr=False)

    def drop(self, reason: str, raw: str | bytes | None, log: logging.Logger, detail: str = "") -> None:
        """Count a dropped frame or event; log it with its raw text at most once per interval per reason.

        The log line is one line whatever the frame holds (`one_line`); `detail` (a traceback, say)
        is appended the same way.
        """
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
            "%s: dropped (%s)%s: %s%s",
            self.exchange,
            one_line(reason, 40),
            f" (+{more} more since last log)" if more else "",
            one_line(text),
            f" [{one_line(detail, _DETAIL_CHARS)}]" if detail else "",
        )

    def error(self, message: str) -> None:
        """The last connection error, as shown on the live page: one line, bounded (reasons arrive
        escaped already: printable text is kept as it is, not escaped twice)."""
        self.last_error = message[:_ERROR_CHARS] if message.isprintable() else one_line(message, _ERROR_CHARS)
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
            "connections": self.connections,
            "topics": self.topics,
            "instruments": self.instruments,
            "refusals": self.refusals,
            "refused_topics": dict(self.refused_topics),
            "at_ms": now,
        }
