-- One row per liquidation, every one of them (no size filter: small ones make the totals).
CREATE TABLE liquidations (
    time        timestamptz NOT NULL,                 -- exchange event time (UTC)
    exchange    text        NOT NULL,                 -- 'binance', 'bybit'
    symbol      text        NOT NULL,                 -- 'BTCUSDT'
    side        text        NOT NULL CHECK (side IN ('LONG', 'SHORT')),  -- the liquidated position
    quantity    numeric     NOT NULL CHECK (quantity > 0),   -- base asset
    price       numeric     NOT NULL CHECK (price > 0),
    value_usd   numeric     NOT NULL CHECK (value_usd > 0),
    raw_side    text        NOT NULL,                 -- the venue's own field ('SELL', 'Buy', ...)
    received_at timestamptz NOT NULL,                 -- our receive time: received_at - time = feed latency
    source      text        NOT NULL DEFAULT 'live',  -- 'live' only from the real endpoints
    sampled     boolean     NOT NULL DEFAULT false,   -- true for Binance (<= 1 event/symbol/second): a lower bound
    cascade_id  bigint,                               -- cascades.id when part of a cascade
    event_key   bigint      NOT NULL                  -- hash of exchange, symbol, time, side, price, quantity
);

SELECT create_hypertable('liquidations', 'time', chunk_time_interval => INTERVAL '1 day');

-- The dedup key: a re-delivered event is stored once (hypertable unique keys include the time column).
CREATE UNIQUE INDEX liquidations_dedup ON liquidations (event_key, time);
CREATE INDEX liquidations_symbol_time ON liquidations (symbol, time DESC);
CREATE INDEX liquidations_cascade ON liquidations (cascade_id, time) WHERE cascade_id IS NOT NULL;
