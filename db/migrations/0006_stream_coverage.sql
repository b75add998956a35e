-- When each stream was connected. Time outside these intervals is missing data, not a quiet market.
-- A row opens on connect; last_seen_at moves forward while messages arrive; disconnected_at closes it.
-- A collector killed without closing leaves disconnected_at NULL: last_seen_at is then the end.
CREATE TABLE stream_coverage (
    connection_id   text        PRIMARY KEY,
    exchange        text        NOT NULL,
    symbols         text[]      NOT NULL,
    source          text        NOT NULL DEFAULT 'live',
    connected_at    timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    disconnected_at timestamptz,
    reason          text        NOT NULL DEFAULT ''
);
CREATE INDEX stream_coverage_exchange_time ON stream_coverage (exchange, connected_at DESC);
