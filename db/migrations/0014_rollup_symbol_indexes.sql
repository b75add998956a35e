-- A coin or a contract read from the rollups: without these, every symbol filter scanned the whole
-- range of `liquidations_1m` / `liquidations_1h` (a year of the whole market's hours, 11 million
-- rows, took 0.8 s for BTC alone). The raw table has had the same index since 0002.
CREATE INDEX liquidations_1m_symbol_bucket ON liquidations_1m (symbol, bucket DESC);
CREATE INDEX liquidations_1h_symbol_bucket ON liquidations_1h (symbol, bucket DESC);
