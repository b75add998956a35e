-- TimescaleDB itself. The Apache edition (Debian's package) is enough for everything in
-- db/migrations/; features that need the Community licence live in db/licensed/.
CREATE EXTENSION IF NOT EXISTS timescaledb;
