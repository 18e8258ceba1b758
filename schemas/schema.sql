-- paystream BigQuery schema: tables and analysis views.
--
-- Apply with ${project} and ${dataset} filled in, e.g.
--   python -c 'from schemas.tables import render_schema_sql as r; print(r("my-project", "paystream"))' \
--     | bq query --use_legacy_sql=false
--
-- The CREATE TABLE statements are generated from schemas/bigquery/*.json (the source of truth):
-- after editing a JSON file, replace them with the output of `python -m schemas.tables`.
-- tests/test_schemas.py fails while they differ.
--
-- Each view's SELECT sits between `-- view: <name>` and `-- end view` and must run unchanged on
-- BigQuery and on DuckDB (schemas.tables.analysis_views() swaps the qualified table names for the
-- local ones): use CURRENT_TIMESTAMP, INTERVAL n HOUR, CAST(x AS DATE), COUNT(DISTINCT x), no
-- BigQuery-only functions, no semicolons inside a view. DATE casts are UTC on BigQuery; DuckDB
-- sessions must SET TimeZone = 'UTC' (schemas.tables.duckdb_bootstrap_sql does).

CREATE TABLE IF NOT EXISTS `${project}.${dataset}.payment_transactions`
(
  transaction_id STRING NOT NULL OPTIONS(description="Producer-assigned unique id of the payment; primary key. Duplicates (redeliveries, replays) are removed before this table."),
  account_id STRING NOT NULL OPTIONS(description="Id of the paying account; clustering key."),
  amount NUMERIC NOT NULL OPTIONS(description="Payment amount in major units of currency, exact decimal with two places (e.g. 12.50)."),
  currency STRING NOT NULL OPTIONS(description="ISO 4217 alphabetic currency code, upper case."),
  card_masked STRING NOT NULL OPTIONS(description="Card number with all but the last four digits hidden, e.g. ****-****-****-1234."),
  card_token STRING NOT NULL OPTIONS(description="Lower-case hex HMAC-SHA256 of the card number under the pipeline's secret key: links payments of one card without storing it."),
  email_masked STRING NOT NULL OPTIONS(description="E-mail with most of the local part hidden, e.g. us****@example.com."),
  email_token STRING NOT NULL OPTIONS(description="Lower-case hex HMAC-SHA256 of the lower-cased e-mail under the pipeline's secret key."),
  phone_masked STRING NOT NULL OPTIONS(description="Phone number with the trailing digits hidden, e.g. 1-555-****."),
  merchant_id STRING NOT NULL OPTIONS(description="Id of the merchant that took the payment."),
  merchant_category STRING NOT NULL OPTIONS(description="Merchant category code (ISO 18245 MCC), 4-digit string."),
  country STRING NOT NULL OPTIONS(description="ISO 3166-1 alpha-2 country of the merchant."),
  card_country STRING OPTIONS(description="ISO 3166-1 alpha-2 country of the card issuer; NULL when the message did not say."),
  event_time TIMESTAMP NOT NULL OPTIONS(description="When the payment happened (event time, UTC, microseconds); partitioning column (by day)."),
  hour_of_day_utc INT64 NOT NULL OPTIONS(description="Feature: hour of event_time in UTC, 0 to 23."),
  amount_to_recent_mean FLOAT64 OPTIONS(description="Feature: amount divided by the mean amount of the account's previous up to 20 payments in event-time order; NULL for the account's first payment."),
  recent_txn_count INT64 NOT NULL OPTIONS(description="Feature: how many previous payments of the account (0 to 20) the mean in amount_to_recent_mean used; 0 for the first payment."),
  seconds_since_prev_txn FLOAT64 OPTIONS(description="Feature: seconds from the latest of the account's last 20 payments decided before it and dated at or before it (never negative); NULL when there is none. A bounded run decides in event-time order, a streaming run in arrival order."),
  cross_border BOOL OPTIONS(description="Feature: TRUE when card_country differs from the merchant country, FALSE when equal, NULL when card_country is unknown."),
  merchant_category_risk FLOAT64 NOT NULL OPTIONS(description="Feature: static risk score of the merchant category code, from 0 (low) to 1 (high)."),
  source_topic STRING OPTIONS(description="Kafka topic the message was read from (or the input file name for file replays); NULL when unknown."),
  source_partition INT64 OPTIONS(description="Kafka partition of the message (0 for file replays); NULL when unknown."),
  source_offset INT64 OPTIONS(description="Kafka offset of the message within its partition (line number for file replays); NULL when unknown."),
  ingested_at TIMESTAMP NOT NULL OPTIONS(description="Processing time at which the pipeline wrote the row (UTC)."),
  PRIMARY KEY (transaction_id) NOT ENFORCED
)
PARTITION BY DATE(event_time)
CLUSTER BY account_id
OPTIONS(description="Deduplicated card payments with PII masked or tokenised and per-account features; one row per transaction_id.");

CREATE TABLE IF NOT EXISTS `${project}.${dataset}.fraud_alerts`
(
  alert_id STRING NOT NULL OPTIONS(description="Deterministic id of the alert (from the account, rule and burst): a replay of the same payments gives the same id; primary key."),
  account_id STRING NOT NULL OPTIONS(description="Id of the account whose payments triggered the rule; clustering key."),
  rule STRING NOT NULL OPTIONS(description="The rule that fired: its kind with its parameters, e.g. velocity:3 in 60s/5s or card_testing:4 under 2.00 in 600s. GROUP BY split(rule, ':')[OFFSET(0)] for the kind."),
  rule_params STRING NOT NULL OPTIONS(description="The rule's parameters as a JSON object, e.g. {\"allowed_lateness_s\":10,\"period_s\":5,\"threshold\":3,\"window_s\":60}."),
  threshold INT64 NOT NULL OPTIONS(description="Number of the rule's payments within one window that raises an alert."),
  window_start TIMESTAMP NOT NULL OPTIONS(description="Start of the first window of the burst that held threshold payments (event time, UTC); partitioning column (by day)."),
  window_end TIMESTAMP NOT NULL OPTIONS(description="End (exclusive) of that first window (event time, UTC)."),
  first_txn_time TIMESTAMP NOT NULL OPTIONS(description="Event time of the earliest payment of the burst in that window."),
  crossing_txn_time TIMESTAMP NOT NULL OPTIONS(description="Event time of the payment that made the window count reach the threshold."),
  matched_count INT64 NOT NULL OPTIONS(description="Largest number of the account's payments the rule counted in any one window of the burst."),
  transaction_ids ARRAY<STRING> OPTIONS(description="Ids of the payments in that first window that crossed the threshold, in event-time order."),
  detected_at TIMESTAMP NOT NULL OPTIONS(description="Processing time at which the pipeline emitted the alert (UTC)."),
  PRIMARY KEY (alert_id) NOT ENFORCED
)
PARTITION BY DATE(window_start)
CLUSTER BY account_id
OPTIONS(description="One row per burst a fraud rule found on an account (rule: which rule, with its parameters), e.g. velocity: too many payments within one sliding event-time window.");

CREATE TABLE IF NOT EXISTS `${project}.${dataset}.dead_letters`
(
  dead_letter_id STRING NOT NULL OPTIONS(description="Deterministic id of the dead letter: a replay of the same input gives the same id; primary key."),
  stage STRING NOT NULL OPTIONS(description="Pipeline stage that rejected the record: parse, dedup or sink."),
  reason STRING NOT NULL OPTIONS(description="Error class, e.g. SchemaError, LuhnError, JSONDecodeError, ConflictingDuplicate; clustering key."),
  message STRING NOT NULL OPTIONS(description="Human-readable error message; never contains raw PII."),
  source_topic STRING OPTIONS(description="Kafka topic the message was read from (or the input file name for file replays); NULL when unknown."),
  source_partition INT64 OPTIONS(description="Kafka partition of the message (0 for file replays); NULL when unknown."),
  source_offset INT64 OPTIONS(description="Kafka offset of the message within its partition (line number for file replays); NULL when unknown."),
  source_key STRING OPTIONS(description="Kafka message key, if any."),
  masked_payload STRING NOT NULL OPTIONS(description="Copy of the original payload with card number, CVV, e-mail and phone masked, truncated to a bounded length. Never the raw payload."),
  transaction_id STRING OPTIONS(description="transaction_id of the record when it could be read; NULL otherwise."),
  received_at TIMESTAMP NOT NULL OPTIONS(description="Processing time at which the pipeline wrote the dead letter (UTC); partitioning column (by day)."),
  PRIMARY KEY (dead_letter_id) NOT ENFORCED
)
PARTITION BY DATE(received_at)
CLUSTER BY reason, stage
OPTIONS(description="Records the pipeline could not process (parse, dedup or sink errors), with a PII-masked copy of the payload.");

-- Accounts ranked by the number of distinct fraud alerts (every rule) whose burst started in the last 24 hours.
CREATE OR REPLACE VIEW `${project}.${dataset}.v_top_fraud_accounts_24h`
OPTIONS(description="Accounts ranked by distinct fraud alerts (every rule) with window_start in the last 24 hours (replayed alerts counted once).")
AS
-- view: v_top_fraud_accounts_24h
SELECT
  account_id,
  COUNT(DISTINCT alert_id) AS alert_count,
  MAX(matched_count) AS matched_count,
  MIN(window_start) AS first_window_start,
  MAX(window_start) AS last_window_start,
  MAX(detected_at) AS last_detected_at
FROM `${project}.${dataset}.fraud_alerts`
WHERE window_start >= CURRENT_TIMESTAMP - INTERVAL 24 HOUR
GROUP BY account_id
ORDER BY alert_count DESC, account_id
-- end view
;

-- Per event day: rows written, distinct transaction ids, and their ratio (1.0 = no duplicate rows).
CREATE OR REPLACE VIEW `${project}.${dataset}.v_dedup_ratio`
OPTIONS(description="Per UTC event day: payment rows, distinct transaction ids and distinct/rows (1.0 means no duplicate reached the table).")
AS
-- view: v_dedup_ratio
SELECT
  CAST(event_time AS DATE) AS event_date,
  COUNT(*) AS row_count,
  COUNT(DISTINCT transaction_id) AS distinct_transaction_ids,
  COUNT(*) - COUNT(DISTINCT transaction_id) AS duplicate_rows,
  COUNT(DISTINCT transaction_id) / COUNT(*) AS dedup_ratio
FROM `${project}.${dataset}.payment_transactions`
GROUP BY CAST(event_time AS DATE)
ORDER BY event_date
-- end view
;

-- Per received day and error class: how many dead letters.
CREATE OR REPLACE VIEW `${project}.${dataset}.v_dead_letters_by_reason`
OPTIONS(description="Per UTC day of received_at and reason: dead letter rows and distinct dead letters.")
AS
-- view: v_dead_letters_by_reason
SELECT
  CAST(received_at AS DATE) AS received_date,
  reason,
  COUNT(*) AS row_count,
  COUNT(DISTINCT dead_letter_id) AS dead_letter_count
FROM `${project}.${dataset}.dead_letters`
GROUP BY CAST(received_at AS DATE), reason
ORDER BY received_date, dead_letter_count DESC, reason
-- end view
;
