variable "project_id" {
  description = "Project that holds the bucket."
  type        = string
}

variable "name" {
  description = "Globally unique bucket name, for Beam/Dataflow temp and staging files, flex template specs and Flink checkpoints, savepoints and HA metadata."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be a valid GCS bucket name: 3-63 lowercase letters, digits, dots, dashes, underscores."
  }
}

variable "location" {
  description = "Bucket location; use the pipeline's region so that temp files and checkpoints stay near the workers."
  type        = string
}

variable "temp_prefix" {
  description = "Object prefix of scratch files (Beam temp_location and staging), deleted after temp_retention_days."
  type        = string
  default     = "temp/"
}

variable "temp_retention_days" {
  description = "Days after which objects under temp_prefix are deleted."
  type        = number
  default     = 7

  validation {
    condition     = var.temp_retention_days >= 1
    error_message = "temp_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept before it is deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "noncurrent_versions_kept" {
  description = "Noncurrent versions kept per object at most; older ones are deleted at once."
  type        = number
  default     = 3

  validation {
    condition     = var.noncurrent_versions_kept >= 1
    error_message = "noncurrent_versions_kept must be at least 1."
  }
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key for default CMEK encryption of new objects; null means Google-managed encryption."
  type        = string
  default     = null
}

variable "access_log_bucket" {
  description = "Optional bucket that receives this bucket's usage logs; null turns usage logs off (Cloud Audit Logs still record access)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels for the bucket."
  type        = map(string)
  default     = {}
}
