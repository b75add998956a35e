"""A scripted trading session on both fake exchanges, with its own expected totals.

Frames are built exactly as the venues send them (samples in /work/shared/reference/exchanges.md,
copied here in shape): Binance `forceOrder` payloads (one per second), Bybit `allLiquidation`
frames carrying several liquidations. Quiet background flow on both sides, then one short-side
burst on both venues: a cross-exchange cascade. The expected totals are computed from the frames
themselves, independently of the collector's parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Totals = dict[tuple[str, str], tuple[int, Decimal]]


@dataclass
class Session:
    binance: list[dict[str, Any]] = field(default_factory=list)
    bybit: list[dict[str, Any]] = field(default_factory=list)
    # (exchange, side, time, price, quantity) -> USD: the script's own dedup
    expected: dict[tuple[str, str, int, str, str], Decimal] = field(default_factory=dict)

    def totals(self) -> Totals:
        out: Totals = {}
        for (exchange, side, *_), usd in self.expected.items():
            n, total = out.get((exchange, side), (0, Decimal(0)))
            out[(exchange, side)] = (n + 1, total + usd)
        return out

    def add_binance(self, t: int, order_side: str, qty: str, price: str) -> None:
        self.binance.append(
            {
                "e": "forceOrder",
                "E": t + 4,
                "o": {
                    "s": "BTCUSDT",
                    "S": order_side,
                    "o": "LIMIT",
                    "f": "IOC",
                    "q": qty,
                    "p": price,
                    "ap": price,
                    "X": "FILLED",
                    "l": qty,
                    "z": qty,
                    "T": t,
                },
            }
        )
        side = "LONG" if order_side == "SELL" else "SHORT"  # SELL closes a long
        self.expected[("binance", side, t, price, qty)] = Decimal(qty) * Decimal(price)

    def add_bybit(self, push_ts: int, items: list[tuple[int, str, str, str]]) -> None:
        data = [{"T": t, "s": "BTCUSDT", "S": s, "v": v, "p": p} for t, s, v, p in items]
        self.bybit.append({"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": push_ts, "data": data})
        for t, s, v, p in items:
            side = "LONG" if s == "Buy" else "SHORT"  # Buy: a long position was liquidated
            self.expected[("bybit", side, t, p, v)] = Decimal(v) * Decimal(p)


def build_session(start_ms: int, background: int = 120, cascade_at_ms: int | None = None) -> Session:
    """`background` Binance events and 4x as many Bybit ones over 2 s steps, then the burst."""
    s = Session()
    for i in range(background):
        t = start_ms + i * 2_000
        s.add_binance(t + 101, ("SELL", "BUY")[i % 3 == 0], f"0.00{i % 9 + 1}", f"{60_000 + i}.1")
        items = [
            (t + 300 + k * 37, ("Buy", "Sell")[(i + k) % 2], f"0.00{k + 1}", f"{60_000 + i + k}.5") for k in range(4)
        ]
        s.add_bybit(t + 500, items)
    burst = cascade_at_ms if cascade_at_ms is not None else start_ms + background * 2_000 + 120_000
    for j in range(3):
        s.add_binance(burst + j * 1_000, "BUY", "1.5", f"{61_000 + j * 50}.0")  # BUY closes shorts
    s.add_bybit(burst + 500, [(burst + 100 + k * 40, "Sell", "2", f"{61_000 + k * 10}.5") for k in range(6)])
    return s


def cascade_expectation(s: Session) -> tuple[int, Decimal, dict[str, int]]:
    """Count, USD and per-venue counts of the burst (the big short-side events)."""
    big = {k: v for k, v in s.expected.items() if k[1] == "SHORT" and Decimal(k[4]) >= 1}
    counts: dict[str, int] = {}
    for k in big:
        counts[k[0]] = counts.get(k[0], 0) + 1
    return len(big), sum(big.values(), Decimal(0)), counts
