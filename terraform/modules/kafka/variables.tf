variable "project_id" {
  description = "Project that holds the Managed Kafka cluster."
  type        = string
}

variable "region" {
  description = "Region of the cluster (the pipeline's region)."
  type        = string
}

variable "create_kafka" {
  description = "Create a Google Managed Service for Apache Kafka cluster and the topic. false: use an existing cluster given by existing_bootstrap_servers."
  type        = bool
  default     = true
}

variable "existing_bootstrap_servers" {
  description = "Bootstrap servers (HOST:PORT[,HOST:PORT]) of an existing Kafka cluster, used when create_kafka is false."
  type        = string
  default     = ""
}

variable "cluster_id" {
  description = "Id of the Managed Kafka cluster."
  type        = string
  default     = "paystream"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.cluster_id))
    error_message = "cluster_id must be lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "subnetworks" {
  description = "Subnetworks (projects/P/regions/R/subnetworks/S) where the cluster's brokers get private endpoints; needed when create_kafka is true."
  type        = list(string)
  default     = []
}

variable "vcpu_count" {
  description = "vCPUs of the cluster (3 or more)."
  type        = number
  default     = 3

  validation {
    condition     = var.vcpu_count >= 3
    error_message = "vcpu_count must be at least 3."
  }
}

variable "memory_gib" {
  description = "Memory of the cluster in GiB, 1 to 8 per vCPU."
  type        = number
  default     = 6

  validation {
    condition     = var.memory_gib >= 3
    error_message = "memory_gib must be at least 3."
  }
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key for CMEK of the cluster's data; null means Google-managed encryption."
  type        = string
  default     = null
}

variable "topic" {
  description = "Name of the payments topic (the pipeline's --kafka_topic)."
  type        = string
  default     = "payments"
}

variable "partition_count" {
  description = "Partitions of the payments topic; payments are keyed by account, so this bounds the read parallelism."
  type        = number
  default     = 4

  validation {
    condition     = var.partition_count >= 1
    error_message = "partition_count must be at least 1."
  }
}

variable "replication_factor" {
  description = "Replication factor of the payments topic."
  type        = number
  default     = 3

  validation {
    condition     = var.replication_factor >= 1 && var.replication_factor <= 3
    error_message = "replication_factor must be 1 to 3."
  }
}

variable "retention_hours" {
  description = "How long the topic keeps payments, in hours: the window for replays (--kafka_replay_s) and for restarts after an outage."
  type        = number
  default     = 168

  validation {
    condition     = var.retention_hours >= 1
    error_message = "retention_hours must be at least 1."
  }
}

variable "labels" {
  description = "Labels for the cluster."
  type        = map(string)
  default     = {}
}
