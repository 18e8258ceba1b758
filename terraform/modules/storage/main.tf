resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Usage logs are opt-in through var.access_log_bucket (dynamic block below); Cloud Audit Logs record access either way.
  project                     = var.project_id
  name                        = var.name
  location                    = var.location
  storage_class               = "STANDARD"
  force_destroy               = false
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = true
  }

  # Scratch files of Beam / Dataflow (temp_location, staging_location).
  lifecycle_rule {
    condition {
      age            = var.temp_retention_days
      matches_prefix = [var.temp_prefix]
    }
    action {
      type = "Delete"
    }
  }

  # Overwritten or deleted versions (old checkpoints, replaced templates) expire ...
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # ... and never pile up beyond a few per object.
  lifecycle_rule {
    condition {
      num_newer_versions = var.noncurrent_versions_kept
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "logging" {
    for_each = var.access_log_bucket == null ? [] : [var.access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = var.name
    }
  }
}
