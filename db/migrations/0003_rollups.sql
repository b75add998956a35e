-- Per-minute and per-hour rollups for long ranges. The collector updates them in the same
-- transaction as the raw rows it inserts (only rows that were really inserted count), so they
-- always equal an aggregate over `liquidations`. Continuous aggregates would do this, but the
-- Apache edition has none.
CREATE TABLE liquidations_1m (
    bucket        timestamptz NOT NULL,
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,
    side          text        NOT NULL,
    source        text        NOT NULL,
    events        bigint      NOT NULL,
    quantity      numeric     NOT NULL,
    value_usd     numeric     NOT NULL,
    max_value_usd numeric     NOT NULL,
    PRIMARY KEY (bucket, exchange, symbol, side, source)
);
SELECT create_hypertable('liquidations_1m', 'bucket', chunk_time_interval => INTERVAL '7 days');

CREATE TABLE liquidations_1h (LIKE liquidations_1m INCLUDING ALL);
SELECT create_hypertable('liquidations_1h', 'bucket', chunk_time_interval => INTERVAL '90 days');
