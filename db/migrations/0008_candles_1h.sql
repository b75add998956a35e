-- Hourly candles, so that charts over months or a year read ~8,760 rows per exchange and symbol
-- instead of aggregating ~525,000 minutes. The collector recomputes an hour from its minutes in
-- the same transaction as it upserts them, so this table always equals an aggregate of `candles`.
CREATE TABLE candles_1h (
    time         timestamptz NOT NULL,   -- hour open time
    exchange     text        NOT NULL,
    symbol       text        NOT NULL,
    open         numeric     NOT NULL,
    high         numeric     NOT NULL,
    low          numeric     NOT NULL,
    close        numeric     NOT NULL,
    volume       numeric     NOT NULL,
    quote_volume numeric     NOT NULL,
    minutes      integer     NOT NULL,   -- 1-minute candles behind this hour (60 when complete)
    source       text        NOT NULL DEFAULT 'live',
    PRIMARY KEY (exchange, symbol, time)
);
SELECT create_hypertable('candles_1h', 'time', chunk_time_interval => INTERVAL '180 days');

-- Backfill from what is already stored.
INSERT INTO candles_1h (time, exchange, symbol, open, high, low, close, volume, quote_volume, minutes, source)
SELECT time_bucket(INTERVAL '1 hour', time), exchange, symbol,
       first(open, time), max(high), min(low), last(close, time),
       sum(volume), sum(quote_volume), count(*), min(source)
FROM candles
GROUP BY 1, 2, 3;

GRANT SELECT ON candles_1h TO liq_reader;
