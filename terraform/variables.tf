# ---- Project ---------------------------------------------------------------------------------

variable "project_id" {
  description = "GCP project everything is created in."
  type        = string
}

variable "region" {
  description = "Region of the bucket, Redis, Kafka, the network and (by default) the dataset, cluster and Dataflow job."
  type        = string
}

variable "name" {
  description = "Base name of the resources (cluster, network, Redis instance, Kafka cluster, Dataflow job)."
  type        = string
  default     = "paystream"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$", var.name))
    error_message = "name must be 1-20 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = { app = "paystream" }
}

variable "enable_apis" {
  description = "Enable the Google APIs the modules need (never disabled on destroy)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to destroy the BigQuery tables, the GKE cluster and the secrets. Keep true outside throw-away projects."
  type        = bool
  default     = true
}

variable "kms_key_name" {
  description = "Optional regional Cloud KMS key (in var.region) for CMEK of the tables, bucket, Redis, Kafka and Dataflow state; null means Google-managed encryption."
  type        = string
  default     = null
}

# ---- Network ---------------------------------------------------------------------------------

variable "create_network" {
  description = "Create a VPC, subnetwork (with GKE secondary ranges), Cloud Router and NAT. false: use the network variables below."
  type        = bool
  default     = true
}

variable "network" {
  description = "Existing VPC network (id or self link), when create_network is false."
  type        = string
  default     = null
}

variable "subnetwork" {
  description = "Existing subnetwork, as an id (projects/P/regions/R/subnetworks/S) or a self link, when create_network is false."
  type        = string
  default     = null
}

variable "pods_range_name" {
  description = "Secondary range of the existing subnetwork for GKE pods, when create_network is false."
  type        = string
  default     = "pods"
}

variable "services_range_name" {
  description = "Secondary range of the existing subnetwork for GKE services, when create_network is false."
  type        = string
  default     = "services"
}

# ---- BigQuery --------------------------------------------------------------------------------

variable "dataset_id" {
  description = "BigQuery dataset of the three tables."
  type        = string
  default     = "paystream"
}

variable "bigquery_location" {
  description = "Dataset location; null means var.region."
  type        = string
  default     = null
}

variable "bigquery_schema_dir" {
  description = "Directory of the <table>.json BigQuery schemas; null means the repository's schemas/bigquery (relative to this module)."
  type        = string
  default     = null
}

variable "partition_expiration_days" {
  description = "Optional partition expiry in days per table (e.g. { dead_letters = 90 })."
  type        = map(number)
  default     = {}
}

# ---- Storage ---------------------------------------------------------------------------------

variable "bucket_name" {
  description = "Bucket for temp files, templates and Flink checkpoints/savepoints; null means PROJECT_ID-NAME."
  type        = string
  default     = null
}

variable "temp_retention_days" {
  description = "Days after which objects under temp/ are deleted."
  type        = number
  default     = 7
}

variable "noncurrent_version_retention_days" {
  description = "Days a noncurrent object version is kept."
  type        = number
  default     = 30
}

# ---- GKE (Flink) -----------------------------------------------------------------------------

variable "create_gke" {
  description = "Create the GKE cluster and Flink node pool (the Flink runner). false when only Dataflow is used."
  type        = bool
  default     = true
}

variable "gke_location" {
  description = "Region (regional cluster) or zone (zonal, cheaper) of the cluster; null means var.region."
  type        = string
  default     = null
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the GKE control plane. Empty: none from outside the VPC."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "master_ipv4_cidr_block" {
  description = "/28 range of the GKE control plane's private endpoint."
  type        = string
  default     = "172.16.0.0/28"
}

variable "gke_release_channel" {
  description = "GKE release channel (RAPID, REGULAR, STABLE, EXTENDED)."
  type        = string
  default     = "REGULAR"
}

variable "flink_machine_type" {
  description = "Machine type of the Flink node pool."
  type        = string
  default     = "e2-standard-4"
}

variable "flink_min_nodes" {
  description = "Autoscaler minimum of the Flink node pool, per zone."
  type        = number
  default     = 1
}

variable "flink_max_nodes" {
  description = "Autoscaler maximum of the Flink node pool, per zone."
  type        = number
  default     = 3
}

variable "flink_spot" {
  description = "Run the Flink nodes on Spot VMs."
  type        = bool
  default     = false
}

variable "gke_database_encryption_key" {
  description = "Optional Cloud KMS key for application-layer encryption of Kubernetes Secrets; null keeps the default."
  type        = string
  default     = null
}

# ---- Redis -----------------------------------------------------------------------------------

variable "create_redis" {
  description = "Create the Memorystore Redis instance (the fraud alert sink)."
  type        = bool
  default     = true
}

variable "redis_tier" {
  description = "BASIC or STANDARD_HA."
  type        = string
  default     = "STANDARD_HA"
}

variable "redis_memory_size_gb" {
  description = "Memory of the Redis instance in GiB."
  type        = number
  default     = 1
}

# ---- Kafka -----------------------------------------------------------------------------------

variable "create_kafka" {
  description = "Create a Managed Service for Apache Kafka cluster and the payments topic. false: set existing_bootstrap_servers."
  type        = bool
  default     = true
}

variable "existing_bootstrap_servers" {
  description = "Bootstrap servers of an existing Kafka cluster, when create_kafka is false."
  type        = string
  default     = ""
}

variable "kafka_topic" {
  description = "The payments topic."
  type        = string
  default     = "payments"
}

variable "kafka_partitions" {
  description = "Partitions of the payments topic."
  type        = number
  default     = 4
}

variable "kafka_vcpu_count" {
  description = "vCPUs of the Managed Kafka cluster (3 or more)."
  type        = number
  default     = 3
}

variable "kafka_memory_gib" {
  description = "Memory of the Managed Kafka cluster in GiB (1 to 8 per vCPU)."
  type        = number
  default     = 6
}

# ---- Secrets ---------------------------------------------------------------------------------

variable "secrets_replica_locations" {
  description = "Regions for user-managed replication of the secrets; empty means automatic replication."
  type        = list(string)
  default     = []
}

variable "secrets_kms_key_name" {
  description = "Optional global Cloud KMS key for CMEK of the secrets (automatic replication only); null means Google-managed encryption."
  type        = string
  default     = null
}

# ---- Dataflow (optional) ---------------------------------------------------------------------

variable "enable_dataflow" {
  description = "Launch the pipeline as a Dataflow flex template job (needs dataflow_template_spec_gcs_path)."
  type        = bool
  default     = false
}

variable "dataflow_template_spec_gcs_path" {
  description = "gs:// path of the flex template spec (dataflow/README.md); null means BUCKET/templates/paystream.json."
  type        = string
  default     = null
}

variable "dataflow_hmac_key_file" {
  description = "Path, as the workers see it, of the HMAC key file (--hmac_key_file); a path, never the key."
  type        = string
  default     = null
}

variable "dataflow_parameters" {
  description = "Extra or overriding template parameters (dataflow/metadata.json), merged over the ones derived from the other modules."
  type        = map(string)
  default     = {}
}

variable "dataflow_max_workers" {
  description = "Autoscaling maximum of Dataflow workers."
  type        = number
  default     = 4
}

variable "dataflow_launchers" {
  description = "Principals allowed to launch Dataflow jobs as the pipeline service account."
  type        = list(string)
  default     = []
}
