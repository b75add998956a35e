"""What a venue symbol may look like: the one rule shared by the collector's edge and the app's URL.

Venues name instruments with letters, ASCII digits and a few separators (`BTCUSDT`,
`1000PEPEUSDT`, `BTCUSDT-26DEC25`, `BTC-USDT-SWAP`, `BTC_USDT`), and not only in ASCII: Binance
lists `币安人生USDT`, `龙虾USDT` and `牛来USDT` among its most traded perpetuals. So a letter is any
Unicode letter (categories L*), digits are ASCII only (no Arabic-Indic or full-width digits), and
the separators are `-`, `_` and `.`. What no venue sends is refused: control characters, lone
surrogates, spaces, Markdown or HTML syntax, and anything longer than `MAX_SYMBOL_CHARS`.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_SYMBOL_CHARS = 40
# \w is Unicode-aware (letters, digits of every script, underscore, some marks); the checks in
# `valid_symbol` narrow it to letters, ASCII digits and the separators.
_SHAPE = re.compile(r"[\w][\w.\-]*")  # fullmatch: "$" would let a trailing newline through


def valid_symbol(text: str) -> bool:
    """True when `text` could be a venue's instrument name (cached: the whole market is ~1,000 names)."""
    # The length is checked before the cache, so that no long text is ever kept in it.
    return 2 <= len(text) <= MAX_SYMBOL_CHARS and _valid_shape(text)


@lru_cache(maxsize=8192)
def _valid_shape(text: str) -> bool:
    if not _SHAPE.fullmatch(text):
        return False
    for ch in text:
        if ch.isascii():
            continue  # ASCII letters, digits, "_", "-", "." passed the pattern
        if not ch.isalpha():  # non-ASCII digits (Arabic-Indic, full-width), marks, symbols
            return False
    return text.upper() == text or not text.isascii()
