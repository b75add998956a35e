-- Alerts fired by the alerter (`python -m alerter`): one row per alert and delivery channel, the
-- outbox of its deliveries. A row is inserted as `fired` before the first attempt, then becomes
-- `delivered` or, after the last retry, `failed`; rows still `fired` when the alerter starts are
-- delivered then (a restart loses nothing). (rule, key, channel) is unique: an alert that two
-- collectors reported, or that a restart re-read, is stored and sent once.
CREATE TABLE alerts (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule       text        NOT NULL,  -- the rule's `name` in LIQ_ALERTS_FILE
    kind       text        NOT NULL CHECK (kind IN ('liquidation', 'cascade', 'volume', 'stream')),
    key        text        NOT NULL,  -- what fired, within the rule: event key, cascade id + phase, venue + phase
    fired_at   timestamptz NOT NULL DEFAULT now(),
    message    text        NOT NULL,  -- the text sent
    status     text        NOT NULL DEFAULT 'fired' CHECK (status IN ('fired', 'delivered', 'failed')),
    attempts   integer     NOT NULL DEFAULT 0,
    channel    text        NOT NULL,  -- telegram | webhook
    last_error text        NOT NULL DEFAULT '',
    event      jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- the stream entry (or health snapshot) that fired it
    UNIQUE (rule, key, channel)
);
CREATE INDEX alerts_fired_at ON alerts (fired_at DESC);
CREATE INDEX alerts_pending ON alerts (id) WHERE status = 'fired';
GRANT SELECT ON alerts TO liq_reader;
