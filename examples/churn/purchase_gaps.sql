-- Mean number of days between a customer's consecutive purchases.
SELECT customer_id, avg(gap_days) AS mean_days_between_purchases
FROM (
  SELECT
    customer_id,
    (date_part('epoch', event_ts)
      - lag(date_part('epoch', event_ts)) OVER (PARTITION BY customer_id ORDER BY event_ts)
    ) / 86400.0 AS gap_days
  FROM events
  WHERE event_type = 'purchase' AND event_ts < TIMESTAMP '${as_of}T00:00:00Z'
) gaps
WHERE gap_days IS NOT NULL
GROUP BY customer_id
