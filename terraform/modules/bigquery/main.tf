locals {
  schema_dir = coalesce(var.schema_dir, "${path.module}/../../../schemas/bigquery")

  # The tables of schemas/tables.py (TABLES). The columns come from schemas/bigquery/<table>.json;
  # tests/test_terraform.py checks names, partitioning, clustering and keys against TABLES.
  tables = {
    payment_transactions = {
      description     = "Deduplicated card payments with PII masked or tokenised and per-account features; one row per transaction_id."
      partition_field = "event_time"
      clustering      = ["account_id"]
      primary_key     = "transaction_id"
    }
    fraud_alerts = {
      description     = "One row per burst a fraud rule found on an account (rule: which rule, with its parameters), e.g. velocity: too many payments within one sliding event-time window."
      partition_field = "window_start"
      clustering      = ["account_id"]
      primary_key     = "alert_id"
    }
    dead_letters = {
      description     = "Records the pipeline could not process (parse, dedup or sink errors), with a PII-masked copy of the payload."
      partition_field = "received_at"
      clustering      = ["reason", "stage"]
      primary_key     = "dead_letter_id"
    }
  }
}

resource "google_bigquery_dataset" "this" {
  #checkov:skip=CKV_GCP_81:CMEK is opt-in through var.kms_key_name (dynamic block below); Google-managed encryption otherwise.
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  friendly_name              = "paystream"
  description                = var.description
  location                   = var.location
  delete_contents_on_destroy = false
  labels                     = var.labels

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }
}

resource "google_bigquery_table" "this" {
  #checkov:skip=CKV_GCP_80:CMEK is opt-in through var.kms_key_name (dynamic block below); Google-managed encryption otherwise.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = each.key
  description         = each.value.description
  deletion_protection = var.deletion_protection
  schema              = file("${local.schema_dir}/${each.key}.json")
  clustering          = each.value.clustering
  labels              = var.labels

  time_partitioning {
    type          = "DAY"
    field         = each.value.partition_field
    expiration_ms = lookup(var.partition_expiration_days, each.key, null) == null ? null : var.partition_expiration_days[each.key] * 86400000
  }

  # Informational, as in schemas/schema.sql (PRIMARY KEY ... NOT ENFORCED): the pipeline writes
  # idempotently on these keys.
  table_constraints {
    primary_key {
      columns = [each.value.primary_key]
    }
  }

  dynamic "encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = encryption_configuration.value
    }
  }
}
