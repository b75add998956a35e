"""Small builders for normalised events, so tests state only what matters to them."""

from __future__ import annotations

import time
from decimal import Decimal

from common.events import Candle, Liquidation, Side, StreamStatus

T0 = 1_795_000_020_000  # a fixed minute boundary in 2026


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def liq(
    exchange: str = "bybit",
    time_ms: int = T0,
    side: Side = Side.LONG,
    qty: str = "1",
    price: str = "50000",
    symbol: str = "BTCUSDT",
    source: str = "test",
    received_ms: int | None = None,
) -> Liquidation:
    quantity, p = Decimal(qty), Decimal(price)
    raw = {("bybit", Side.LONG): "Buy", ("bybit", Side.SHORT): "Sell"}.get((exchange, side))
    return Liquidation(
        exchange=exchange,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=p,
        value_usd=quantity * p,
        time_ms=time_ms,
        received_ms=time_ms + 5 if received_ms is None else received_ms,
        raw_side=raw or ("SELL" if side == Side.LONG else "BUY"),
        source=source,
        sampled=exchange == "binance",
    )


def candle(exchange: str = "bybit", open_ms: int = T0, close: str = "50000", closed: bool = False) -> Candle:
    c = Decimal(close)
    return Candle(
        exchange,
        "BTCUSDT",
        open_ms,
        c,
        c + 10,
        c - 10,
        c,
        Decimal("12.5"),
        c * Decimal("12.5"),
        closed,
        open_ms + 1,
        "test",
    )


def status(state: str, connection_id: str = "conn-1", at_ms: int = T0, reason: str = "") -> StreamStatus:
    return StreamStatus("bybit", connection_id, state, at_ms, ("BTCUSDT",), "test", reason)
