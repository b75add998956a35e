-- The venues' instrument lists (collector/instruments), one row per venue symbol, in the one
-- instrument model of common/instruments.py. The collector upserts a venue's whole list after each
-- successful refresh from its REST API and stamps `delisted_at` on the rows the venue stopped
-- listing; when REST cannot be reached at start, it starts on the rows with `delisted_at IS NULL`.
-- Cross-venue totals join on `canonical` (BTC-USDT-PERP) or on `base`, never on `symbol`.
CREATE TABLE instruments (
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,  -- the venue's own symbol, exactly as its streams name it
    base          text        NOT NULL,  -- canonical base asset: PEPE, never 1000PEPE
    quote         text        NOT NULL,  -- USDT | USDC
    contract_type text        NOT NULL CHECK (contract_type IN ('perpetual', 'dated')),
    multiplier    numeric     NOT NULL DEFAULT 1 CHECK (multiplier > 0),  -- the 1000 of 1000PEPEUSDT
    size_unit     text        NOT NULL DEFAULT 'base' CHECK (size_unit IN ('base', 'contracts')),
    contract_size numeric     NOT NULL DEFAULT 1 CHECK (contract_size > 0),  -- base units per contract
    expiry        text        NOT NULL DEFAULT '' CHECK (expiry = '' OR expiry ~ '^[0-9]{8}$'),  -- YYYYMMDD
    status        text        NOT NULL DEFAULT 'trading',  -- the venue's status, lower case
    canonical     text        GENERATED ALWAYS AS (
                      base || '-' || quote || '-' ||
                      CASE WHEN contract_type = 'perpetual' THEN 'PERP' ELSE COALESCE(NULLIF(expiry, ''), 'FUT') END
                  ) STORED,
    listed_at     timestamptz NOT NULL DEFAULT now(),  -- first seen (again, after a delisting)
    delisted_at   timestamptz,                         -- NULL while the venue lists it
    updated_at    timestamptz NOT NULL DEFAULT now(),  -- the last refresh that listed it (or delisted it)
    PRIMARY KEY (exchange, symbol)
);
CREATE INDEX instruments_canonical ON instruments (canonical);
GRANT SELECT ON instruments TO liq_reader;
