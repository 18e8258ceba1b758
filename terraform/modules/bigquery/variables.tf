variable "project_id" {
  description = "Project that holds the dataset."
  type        = string
}

variable "dataset_id" {
  description = "BigQuery dataset for the three paystream tables (the pipeline's --warehouse=bigquery:PROJECT:DATASET)."
  type        = string
  default     = "paystream"

  validation {
    condition     = can(regex("^[A-Za-z_][A-Za-z0-9_]*$", var.dataset_id)) && length(var.dataset_id) <= 1024
    error_message = "dataset_id must be at most 1024 letters, digits and underscores, starting with a letter or underscore."
  }
}

variable "location" {
  description = "Dataset location: a multi-region (EU, US) or the region the pipeline runs in (e.g. europe-west1)."
  type        = string
}

variable "description" {
  description = "Description of the dataset."
  type        = string
  default     = "paystream: deduplicated card payments, velocity fraud alerts and dead letters."
}

variable "schema_dir" {
  description = "Directory holding <table>.json BigQuery schemas. null means the repository's schemas/bigquery, relative to this module."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to destroy the tables (Terraform-side guard). Keep true outside throw-away projects."
  type        = bool
  default     = true
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for CMEK on the dataset and tables; null means Google-managed encryption."
  type        = string
  default     = null
}

variable "partition_expiration_days" {
  description = "Optional partition expiry per table, in days (e.g. { dead_letters = 30 }). Tables not named keep their partitions."
  type        = map(number)
  default     = {}

  validation {
    condition = alltrue([
      for table, days in var.partition_expiration_days :
      contains(["payment_transactions", "fraud_alerts", "dead_letters"], table) && days > 0
    ])
    error_message = "Keys must be payment_transactions, fraud_alerts or dead_letters, and days > 0."
  }
}

variable "labels" {
  description = "Labels for the dataset and tables."
  type        = map(string)
  default     = {}
}
