variable "project_id" {
  description = "GCP project of the production stack."
  type        = string
}

variable "region" {
  description = "Region of the production stack."
  type        = string
  default     = "europe-west1"
}

variable "master_authorized_networks" {
  description = "CIDR blocks (VPN or bastion egress) allowed to reach the GKE control plane."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "kms_key_name" {
  description = "Regional Cloud KMS key (in var.region) for CMEK of the tables, bucket, Redis, Kafka and Dataflow; null means Google-managed encryption."
  type        = string
  default     = null
}

variable "gke_database_encryption_key" {
  description = "Cloud KMS key for application-layer encryption of Kubernetes Secrets; null keeps the default."
  type        = string
  default     = null
}

variable "enable_dataflow" {
  description = "Also launch the pipeline on Dataflow from the flex template."
  type        = bool
  default     = false
}

variable "dataflow_hmac_key_file" {
  description = "Path of the HMAC key file as the Dataflow workers see it (--hmac_key_file)."
  type        = string
  default     = null
}

variable "dataflow_launchers" {
  description = "Principals (user:, group:, serviceAccount:) allowed to launch Dataflow jobs as the pipeline service account."
  type        = list(string)
  default     = []
}
