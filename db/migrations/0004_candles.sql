-- 1-minute OHLCV per exchange and symbol; updates of an open minute upsert on the primary key.
CREATE TABLE candles (
    time         timestamptz NOT NULL,   -- candle open time
    exchange     text        NOT NULL,
    symbol       text        NOT NULL,
    open         numeric     NOT NULL,
    high         numeric     NOT NULL,
    low          numeric     NOT NULL,
    close        numeric     NOT NULL,
    volume       numeric     NOT NULL,   -- base asset
    quote_volume numeric     NOT NULL,
    closed       boolean     NOT NULL,   -- false while the minute is still open
    source       text        NOT NULL DEFAULT 'live',
    PRIMARY KEY (exchange, symbol, time)
);
SELECT create_hypertable('candles', 'time', chunk_time_interval => INTERVAL '7 days');
CREATE INDEX candles_symbol_time ON candles (symbol, time DESC);
