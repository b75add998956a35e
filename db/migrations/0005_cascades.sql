-- Detected cascades: same-side liquidations of one symbol inside a rolling window.
CREATE TABLE cascades (
    id             bigint      PRIMARY KEY,   -- stable hash of symbol, side and first member
    symbol         text        NOT NULL,
    side           text        NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    start_time     timestamptz NOT NULL,
    end_time       timestamptz NOT NULL,
    events         integer     NOT NULL,
    quantity       numeric     NOT NULL,
    value_usd      numeric     NOT NULL,
    exchanges      text[]      NOT NULL,
    events_by_exchange jsonb   NOT NULL,      -- {"binance": 3, "bybit": 9}
    cross_exchange boolean     NOT NULL,
    peak_minute    timestamptz,
    price_start    numeric,
    price_end      numeric,
    price_move_pct numeric,
    risk_score     integer     NOT NULL CHECK (risk_score BETWEEN 0 AND 100),
    active         boolean     NOT NULL DEFAULT false,
    source         text        NOT NULL DEFAULT 'live'
);
CREATE INDEX cascades_symbol_start ON cascades (symbol, start_time DESC);
