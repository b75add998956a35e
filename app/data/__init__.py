"""The app's data layer: the only code that touches Redis and TimescaleDB.

Modules: `connections` (settings, pools, Redis clients, error mapping), `live` (the 60-minute
Redis view), `history` (TimescaleDB totals, candles, liquidation bars, coverage), `scope` (the
shared range/filter reader over raw rows and rollups), and one module per analysis page:
`heatmap`, `analyses`, `cascades`, `explorer`. Data functions are plain (a pool or client plus
filters in, DataFrames or dataclasses out) so the CLI and the benchmarks call them without
Streamlit; `cached_*` wrappers add short-TTL Streamlit caching keyed by the connection URL.
"""
