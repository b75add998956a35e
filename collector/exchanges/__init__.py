"""Exchange adapters: one module per venue, all driven by the reconnecting loop in `connection`.

`ADAPTERS` maps the names in LIQ_EXCHANGES to their adapter classes; the collector service builds
one per configured exchange on its symbols (the explicit LIQ_SYMBOLS, or the instrument catalog's
list for ALL), calls `await adapter.run(stop)`, and passes each instrument refresh on with
`add_symbols()` / `remove_symbols()` / `retry_refused()`. An adapter spreads its streams over as
many connections as the venue's limits need (`connection.Shard`).
"""

from __future__ import annotations

from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.connection import ExchangeAdapter

ADAPTERS: dict[str, type[ExchangeAdapter]] = {"binance": BinanceAdapter, "bybit": BybitAdapter}

__all__ = ["ADAPTERS", "BinanceAdapter", "BybitAdapter", "ExchangeAdapter"]
