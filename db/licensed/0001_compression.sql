-- Native compression needs the Community licence (timescaledb.license = 'timescale'), as in the
-- official Docker image; the migration runner applies this file only there.
ALTER TABLE liquidations SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                              timescaledb.compress_orderby = 'time DESC, event_key');
SELECT add_compression_policy('liquidations', INTERVAL '7 days', if_not_exists => true);

ALTER TABLE liquidations_1m SET (timescaledb.compress,
                                 timescaledb.compress_segmentby = 'symbol, exchange, side, source',
                                 timescaledb.compress_orderby = 'bucket DESC');
SELECT add_compression_policy('liquidations_1m', INTERVAL '30 days', if_not_exists => true);

ALTER TABLE liquidations_1h SET (timescaledb.compress,
                                 timescaledb.compress_segmentby = 'symbol, exchange, side, source',
                                 timescaledb.compress_orderby = 'bucket DESC');
SELECT add_compression_policy('liquidations_1h', INTERVAL '180 days', if_not_exists => true);

ALTER TABLE candles SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol, exchange',
                         timescaledb.compress_orderby = 'time DESC');
SELECT add_compression_policy('candles', INTERVAL '7 days', if_not_exists => true);
