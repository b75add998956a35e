"""Alert rules: the `[[rule]]` tables of LIQ_ALERTS_FILE (TOML, read with tomllib), validated.

Each rule has a `name`, ONE condition (`kind`) and its filters:

    kind = "liquidation"  min_usd                      one liquidation of at least min_usd
    kind = "cascade"      min_usd and/or min_risk,     a cascade reaching them: a start message, and
                          cross_venue_only (false)     one with its totals when it ends
    kind = "volume"       min_usd, minutes             at least min_usd liquidated in the last N minutes
                                                       (exact sums of the live view: alerter/volume.py)
    kind = "stream"       minutes [coin|contract]      a venue down or silent > N minutes, and its recovery;
                                                       with a coin or contract: no candle of it on a
                                                       venue for N minutes (a coin that should not be quiet)

Filters: `coin` (canonical base, "BTC") or `contract` (a venue symbol "BTCUSDT" or canonical
"BTC-USDT-PERP"), `venues` (list), `side` (LONG | SHORT | ALL), `include_nonlive` (false: only
`source == "live"` events alert); `cooldown_s` (300) is per rule and coin (stream: per venue).
A malformed file raises `RulesError` whose message names the file and line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from common.instruments import guess_instrument
from common.venues import NAMES

KINDS = ("liquidation", "cascade", "volume", "stream")
SIDES = ("LONG", "SHORT", "ALL")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_COMMON = {"name", "kind", "cooldown_s", "venues", "include_nonlive"}
_MARKET = {"coin", "contract", "side"}
_KEYS: dict[str, set[str]] = {
    "liquidation": _COMMON | _MARKET | {"min_usd"},
    "cascade": _COMMON | _MARKET | {"min_usd", "min_risk", "cross_venue_only"},
    "volume": _COMMON | _MARKET | {"min_usd", "minutes"},
    "stream": _COMMON | {"minutes", "coin", "contract"},  # with a coin: that coin silent on a venue
}


class RulesError(ValueError):
    """The rules file cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str
    cooldown_s: int = 300
    coin: str | None = None
    contract: str | None = None
    venues: tuple[str, ...] = ()  # empty: every venue
    side: str = "ALL"
    min_usd: Decimal | None = None
    min_risk: int | None = None
    cross_venue_only: bool = False
    minutes: float | None = None
    include_nonlive: bool = False

    def wants_source(self, source: str) -> bool:
        return self.include_nonlive or source == "live"

    def wants_side(self, side: str) -> bool:
        return self.side == "ALL" or side == self.side

    def wants_venue(self, venue: str) -> bool:
        return not self.venues or venue in self.venues

    def wants_liquidation(self, exchange: str, symbol: str) -> bool:
        """The coin / contract filter for one venue symbol."""
        if self.coin is not None and _instrument(exchange, symbol)[0] != self.coin:
            return False
        if self.contract is not None and self.contract != symbol and self.contract != _instrument(exchange, symbol)[1]:
            return False
        return True

    def wants_canonical(self, canonical: str) -> bool:
        """The coin / contract filter for a canonical symbol (a cascade's `BTC-USDT-PERP`)."""
        if self.coin is not None and canonical.split("-", 1)[0] != self.coin:
            return False
        if self.contract is not None and self.contract != canonical and _instrument("", self.contract)[1] != canonical:
            return False
        return True

    def scope(self) -> str:
        """What a volume rule sums: one contract, one coin, or the market."""
        return self.contract or self.coin or "market"


@lru_cache(maxsize=65536)
def _instrument(exchange: str, symbol: str) -> tuple[str, str]:
    i = guess_instrument(exchange, symbol)
    return i.base, i.canonical


def load_rules(path: Path) -> list[Rule]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, origin: str = "rules") -> list[Rule]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{origin}: {exc}") from None  # tomllib says "(at line L, column C)"
    unknown = sorted(set(doc) - {"rule"})
    if unknown:
        raise RulesError(f"{origin}: unknown top-level key {unknown[0]!r} (rules are [[rule]] tables)")
    tables = doc.get("rule", [])
    if not isinstance(tables, list) or not tables:
        raise RulesError(f"{origin}: no [[rule]] table")
    lines = text.splitlines()
    rules: list[Rule] = []
    for index, table in enumerate(tables):
        try:
            rules.append(_rule(table))
        except _Bad as bad:
            line = _line_of(lines, index, bad.key)
            at = f"line {line}: " if line else ""
            raise RulesError(f"{origin}: {at}rule #{index + 1} key {bad.key!r}: {bad.message}") from None
    names = [r.name for r in rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            line = _line_of(lines, index, "name")
            raise RulesError(f"{origin}: line {line}: rule #{index + 1} key 'name': {name!r} is used twice")
    return rules


class _Bad(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _line_of(lines: list[str], index: int, key: str) -> int | None:
    """The line of `key` inside the index-th [[rule]] table (else the table's header line)."""
    headers = [n for n, line in enumerate(lines) if re.match(r"^\s*\[\[\s*rule\s*\]\]", line)]
    if index >= len(headers):
        return None
    start = headers[index]
    end = next((n for n, line in enumerate(lines) if n > start and re.match(r"^\s*\[", line)), len(lines))
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for n in range(start, end):
        if pattern.match(lines[n]):
            return n + 1
    return start + 1


def _rule(t: Any) -> Rule:
    if not isinstance(t, dict):
        raise _Bad("rule", "expected a table")
    name = t.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _Bad("name", "required: 1-64 letters, digits, '_', '.' or '-'")
    kind = t.get("kind")
    if kind not in KINDS:
        raise _Bad("kind", f"required: one of {', '.join(KINDS)}, got {kind!r}")
    for key in t:
        if key not in _KEYS[kind]:
            raise _Bad(key, f"not a key of a {kind!r} rule (allowed: {', '.join(sorted(_KEYS[kind]))})")
    out: dict[str, Any] = {"name": name, "kind": kind}
    if "cooldown_s" in t:
        out["cooldown_s"] = _whole(t, "cooldown_s", 0, 30 * 86400)
    if "venues" in t:
        venues = t["venues"]
        if not isinstance(venues, list) or not venues or not all(isinstance(v, str) for v in venues):
            raise _Bad("venues", "expected a non-empty list of venue names")
        for v in venues:
            if v.lower() not in NAMES:
                raise _Bad("venues", f"unknown venue {v!r}; known: {', '.join(NAMES)}")
        out["venues"] = tuple(dict.fromkeys(v.lower() for v in venues))
    for flag in ("include_nonlive", "cross_venue_only"):
        if flag in t:
            if not isinstance(t[flag], bool):
                raise _Bad(flag, "expected true or false")
            out[flag] = t[flag]
    if "coin" in t and "contract" in t:
        raise _Bad("contract", "give `coin` or `contract`, not both")
    for key in ("coin", "contract"):
        if key in t:
            value = t[key]
            if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9_.-]{1,40}$", value):
                raise _Bad(key, "expected a name like 'BTC' / 'BTCUSDT' / 'BTC-USDT-PERP'")
            out[key] = value.upper()
    if "side" in t:
        side = t["side"]
        if not isinstance(side, str) or side.upper() not in SIDES:
            raise _Bad("side", f"one of {', '.join(SIDES)}, got {side!r}")
        out["side"] = side.upper()
    if "min_usd" in t:
        out["min_usd"] = _usd(t, "min_usd")
    if "min_risk" in t:
        out["min_risk"] = _whole(t, "min_risk", 0, 100)
    if "minutes" in t:
        value = t["minutes"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 60:
            raise _Bad("minutes", f"expected a number of minutes above 0, at most 60, got {value!r}")
        out["minutes"] = float(value)
    required = {"liquidation": ("min_usd",), "volume": ("min_usd", "minutes"), "stream": ("minutes",)}
    for key in required.get(kind, ()):
        if key not in out:
            raise _Bad(key, f"required for a {kind!r} rule")
    if kind == "cascade" and "min_usd" not in out and "min_risk" not in out:
        raise _Bad("min_usd", "a 'cascade' rule needs min_usd and/or min_risk")
    return Rule(**out)


def _whole(t: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = t[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _Bad(key, f"expected a whole number from {lo} to {hi}, got {value!r}")
    return value


def _usd(t: dict[str, Any], key: str) -> Decimal:
    value = t[key]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Bad(key, f"expected a USD amount, got {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _Bad(key, f"expected a USD amount, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise _Bad(key, f"expected a USD amount >= 0, got {value!r}")
    return amount
