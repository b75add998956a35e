-- Per-symbol days: `liquidations_1h` summed per UTC day. A coin's year read from the hours is
-- ~175,000 rows for BTC's contracts on five venues (a 1-day chart or a daily series took ~300 ms,
-- bench/bench_pages.py); from the days it is 24 times fewer. Same columns, same guarantee: the
-- collector updates it in the same statement as the other rollups.
CREATE TABLE liquidations_1d (LIKE liquidations_1m INCLUDING ALL);
SELECT create_hypertable('liquidations_1d', 'bucket', chunk_time_interval => INTERVAL '365 days');

-- A database with history gets it from the hourly rollup, which equals the raw rows.
INSERT INTO liquidations_1d (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
SELECT time_bucket('1 day', bucket), exchange, symbol, side, source,
       sum(events), sum(quantity), sum(value_usd), max(max_value_usd)
FROM liquidations_1h
GROUP BY 1, 2, 3, 4, 5;
