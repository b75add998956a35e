-- The large liquidations by time: the chart's institutional-size markers (LIQ_INSTITUTIONAL_USD,
-- default $100,000) and any list whose minimum is at least $100,000 read only these, 0.2 % of the
-- rows (178,000 of the whole-market year's 78 million). A burst hour of the whole market holds
-- 400,000 liquidations: finding its large ones took 70 ms by scanning, 13 ms by this index
-- (bench/bench_pages.py). The planner uses it whenever a query's minimum is at least $100,000.
CREATE INDEX liquidations_large_time ON liquidations (time DESC) WHERE value_usd >= 100000;
