variable "project_id" {
  description = "Project the Dataflow job runs in."
  type        = string
}

variable "region" {
  description = "Dataflow region (the region of the bucket, dataset, Kafka and Redis)."
  type        = string
}

variable "job_name" {
  description = "Name of the streaming job."
  type        = string
  default     = "paystream"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,62}[a-z0-9])?$", var.job_name))
    error_message = "job_name must be lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "template_spec_gcs_path" {
  description = "gs:// path of the flex template spec built by gcloud dataflow flex-template build (dataflow/README.md)."
  type        = string

  validation {
    condition     = startswith(var.template_spec_gcs_path, "gs://")
    error_message = "template_spec_gcs_path must be a gs:// path."
  }
}

variable "parameters" {
  description = "Pipeline parameters of the template (dataflow/metadata.json), e.g. kafka_bootstrap_servers, warehouse, hmac_key_file. No secret values: pass file paths or references."
  type        = map(string)
  default     = {}
}

variable "service_account_email" {
  description = "Service account the launcher and the workers run as (least privilege, from the iam module)."
  type        = string
}

variable "temp_location" {
  description = "gs:// path for Beam temp files."
  type        = string
}

variable "staging_location" {
  description = "gs:// path for staged files."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork of the workers, as a full URL or regions/REGION/subnetworks/NAME."
  type        = string
}

variable "machine_type" {
  description = "Worker machine type."
  type        = string
  default     = "n2-standard-2"
}

variable "max_workers" {
  description = "Autoscaling maximum of workers."
  type        = number
  default     = 4

  validation {
    condition     = var.max_workers >= 1
    error_message = "max_workers must be at least 1."
  }
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key for CMEK of the job's state; null means Google-managed encryption."
  type        = string
  default     = null
}

variable "on_delete" {
  description = "What terraform destroy does to the running job: drain (finish in-flight data) or cancel."
  type        = string
  default     = "drain"

  validation {
    condition     = contains(["drain", "cancel"], var.on_delete)
    error_message = "on_delete must be drain or cancel."
  }
}

variable "labels" {
  description = "Labels for the job."
  type        = map(string)
  default     = {}
}
