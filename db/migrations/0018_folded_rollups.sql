-- The hourly and daily rollups are folded from the minute rollup once an hour has closed, instead
-- of being upserted by every batch. In a whole-market burst each batch of 5,000 liquidations touches
-- ~4,000 (minute, symbol, side) groups, and every rollup tier upserted them one by one again: the
-- hour and day tiers cost ~30 of the ~69 us of database CPU per liquidation (bench/bench_db.py).
--
-- `rollup_fold.folded_through` (W, an hour boundary) splits the tiers:
-- - buckets before W: `liquidations_1h`, `liquidations_1d` (the hours before W of W's day) and
--   `liquidations_market_1h` hold them, exactly; the writer still upserts liquidations older
--   than W into them in the same statement (a venue minutes behind, a replayed spool);
-- - from W on: only `liquidations_1m` has them, and the collector folds each hour once it closes
--   (db/rollups.py `FOLD`, collector/storage/maintenance.py), moving W on.
-- Readers use the views below, which join the two at W, so they always equal the raw rows. The
-- writer holds `FOR SHARE` on this row while it writes, the fold holds it for update: no batch
-- straddles a fold.
CREATE TABLE rollup_fold (
    one            boolean     PRIMARY KEY DEFAULT true CHECK (one),
    folded_through timestamptz NOT NULL CHECK (folded_through = time_bucket('1 hour', folded_through))
);
INSERT INTO rollup_fold (folded_through) VALUES (time_bucket('1 hour', now()));

-- The line, for the views: a STABLE function is evaluated when a query is planned, so the planner
-- estimates `bucket >= rollup_line()` from the real value (a subquery's value is unknown to it, and
-- its default guesses are far off), and TimescaleDB excludes chunks at executor start-up.
CREATE FUNCTION rollup_line() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT folded_through FROM rollup_fold $$;

-- The folded tables hold nothing at or after W (the views read them unfiltered, so that a reader's
-- plan over them is the plain table's). Until now the writer kept every tier exact, the open hour
-- too: drop those rows (the views take them from the minutes), and rebuild W's day from its hours
-- before W.
DELETE FROM liquidations_1h WHERE bucket >= rollup_line();
DELETE FROM liquidations_market_1h WHERE bucket >= rollup_line();
DELETE FROM liquidations_1d WHERE bucket >= time_bucket('1 day', rollup_line());
INSERT INTO liquidations_1d (bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd)
SELECT time_bucket('1 day', bucket), exchange, symbol, side, source,
       sum(events), sum(quantity), sum(value_usd), max(max_value_usd)
FROM liquidations_1h
WHERE bucket >= time_bucket('1 day', rollup_line())
  AND bucket < rollup_line()
GROUP BY 1, 2, 3, 4, 5;

-- Every hour (day) of the rollup: the folded rows (all before W), the minutes from W on. A day
-- that W cuts has a row in each part; readers sum per bucket. The folded part has no filter on
-- purpose: a filter on the line (unknown when the plan is made) made the planner guess 0.5 % of
-- a range's rows and sort where it hashed (whole-history pages twice as slow, bench/bench_pages.py).
CREATE VIEW liquidations_1h_all AS
SELECT bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd
FROM liquidations_1h
UNION ALL
SELECT time_bucket('1 hour', bucket), exchange, symbol, side, source,
       sum(events), sum(quantity), sum(value_usd), max(max_value_usd)
FROM liquidations_1m WHERE bucket >= rollup_line()
GROUP BY 1, 2, 3, 4, 5;

CREATE VIEW liquidations_1d_all AS
SELECT bucket, exchange, symbol, side, source, events, quantity, value_usd, max_value_usd
FROM liquidations_1d
UNION ALL
SELECT time_bucket('1 day', bucket), exchange, symbol, side, source,
       sum(events), sum(quantity), sum(value_usd), max(max_value_usd)
FROM liquidations_1m WHERE bucket >= rollup_line()
GROUP BY 1, 2, 3, 4, 5;

CREATE VIEW liquidations_market_1h_all AS
SELECT bucket, exchange, side, source, events, value_usd, max_value_usd
FROM liquidations_market_1h
UNION ALL
SELECT time_bucket('1 hour', bucket), exchange, side, source, sum(events), sum(value_usd), max(max_value_usd)
FROM liquidations_1m WHERE bucket >= rollup_line()
GROUP BY 1, 2, 3, 4;

-- 0007's default privileges cover views created by the owner; say it for the reader anyway.
GRANT EXECUTE ON FUNCTION rollup_line() TO liq_reader;
GRANT SELECT ON rollup_fold, liquidations_1h_all, liquidations_1d_all, liquidations_market_1h_all TO liq_reader;
