-- A coin or a contract read from the rollups: without these, every symbol filter scanned the whole
-- range of `liquidations_1m` / `liquidations_1h` (a year of the whole market's hours, 11 million
-- rows, took 0.8 s for BTC alone). The raw table has had the same index since 0002.
CREATE INDEX liquidations_1m_symbol_bucket ON liquidations_1m (symbol, bucket DESC);
-- The hourly one carries every column the pages read: a coin's year is ~90,000 rows, one per
-- page of the table (each hour holds every symbol's rows), and an index-only scan reads them in
-- order from a few thousand pages instead (BTC's hour-of-day profile: 98 -> 38 ms).
CREATE INDEX liquidations_1h_symbol_bucket ON liquidations_1h (symbol, bucket DESC)
    INCLUDE (exchange, side, source, events, quantity, value_usd, max_value_usd);
