"""Exchange adapters: one module per venue, all driven by the reconnecting loop in `connection`.

`ADAPTERS` maps the names in LIQ_EXCHANGES to their adapter classes; the collector service builds
one per configured exchange on its symbols (the explicit LIQ_SYMBOLS, or the instrument catalog's
list for ALL), calls `await adapter.run(stop)`, and passes each instrument refresh on with
`add_symbols()` / `remove_symbols()` / `retry_refused()`. An adapter spreads its streams over as
many connections as the venue's limits need (`connection.Shard`).
"""

from __future__ import annotations

from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bitget import BitgetAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.connection import ExchangeAdapter
from collector.exchanges.gate import GateAdapter
from collector.exchanges.okx import OkxAdapter

# One line per venue; the venue's facts (endpoints, sampling, labels) are in common.venues.
ADAPTERS: dict[str, type[ExchangeAdapter]] = {
    a.name: a for a in (BinanceAdapter, BybitAdapter, OkxAdapter, GateAdapter, BitgetAdapter)
}

__all__ = [
    "ADAPTERS",
    "BinanceAdapter",
    "BitgetAdapter",
    "BybitAdapter",
    "ExchangeAdapter",
    "GateAdapter",
    "OkxAdapter",
]
