-- The whole market per hour: `liquidations_1h` without the symbol. A page over ALL (every contract
-- of every venue) summed ~1,300 symbol rows per hour from `liquidations_1h`: 0.4 s for a week,
-- 3 to 9 s for a year (bench/bench_pages.py); this table has a few rows per hour. The collector
-- updates it in the same statement as the other rollups (only rows really inserted count), so it
-- always equals an aggregate over `liquidations`. No quantity: base units of different coins do
-- not add up.
CREATE TABLE liquidations_market_1h (
    bucket        timestamptz NOT NULL,
    exchange      text        NOT NULL,
    side          text        NOT NULL,
    source        text        NOT NULL,
    events        bigint      NOT NULL,
    value_usd     numeric     NOT NULL,
    max_value_usd numeric     NOT NULL,
    PRIMARY KEY (bucket, exchange, side, source)
);
SELECT create_hypertable('liquidations_market_1h', 'bucket', chunk_time_interval => INTERVAL '90 days');

-- A database with history gets it from the hourly rollup, which equals the raw rows.
INSERT INTO liquidations_market_1h (bucket, exchange, side, source, events, value_usd, max_value_usd)
SELECT bucket, exchange, side, source, sum(events), sum(value_usd), max(max_value_usd)
FROM liquidations_1h
GROUP BY bucket, exchange, side, source;
