-- candles_1h.source is 'live' only when every minute of the hour is live (the collector's rule);
-- 0008's backfill took min(source), which labelled mixed hours 'live'.
UPDATE candles_1h AS h SET source = m.source
FROM (SELECT time_bucket(INTERVAL '1 hour', time) AS hour, exchange, symbol,
             min(source) FILTER (WHERE source <> 'live') AS source
      FROM candles GROUP BY 1, 2, 3 HAVING bool_or(source <> 'live')) AS m
WHERE h.time = m.hour AND h.exchange = m.exchange AND h.symbol = m.symbol AND h.source <> m.source;
