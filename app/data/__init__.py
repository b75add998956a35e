"""The app's data layer: the only code that touches Redis and TimescaleDB. No Streamlit here.

Modules: `connections` (pools, Redis clients, error mapping), `rows` (the one WHERE builder and
the one segmenter of ranges onto raw rows and rollups, cascade counting, event bounds), `catalog`
(the venue symbols and their coins), `live` (the 60-minute Redis view), `market` (the overview),
`history` (totals, candles, bars, coverage), `export` (files and streamed exports), and one module
per analysis page: `heatmap`, `analyses`, `cascades`, `explorer`, `alerts`. Data functions are
plain: a pool or client, a `Query` (app/query.py) and a range in, DataFrames or dataclasses out,
so the CLI and the benchmarks call them directly; app/cache.py caches them for the pages.
"""
