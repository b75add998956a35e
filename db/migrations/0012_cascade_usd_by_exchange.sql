-- Each venue's USD in a cascade (its share), beside events_by_exchange: {"binance": "120000.5", "okx": "80000"}.
-- Cascades stored before this column have '{}' (their shares are unknown, their totals are not).
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS usd_by_exchange jsonb NOT NULL DEFAULT '{}'::jsonb;
