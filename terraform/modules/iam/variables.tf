variable "project_id" {
  description = "Project that holds the service accounts and the resources they are granted on."
  type        = string
}

variable "pipeline_account_id" {
  description = "Account id of the pipeline workers' service account (Dataflow workers and the flex template launcher)."
  type        = string
  default     = "paystream-dataflow"
}

variable "flink_account_id" {
  description = "Account id of the service account Flink pods use through Workload Identity."
  type        = string
  default     = "paystream-flink"
}

variable "nodes_account_id" {
  description = "Account id of the GKE nodes' service account (logs, metrics, image pulls only)."
  type        = string
  default     = "paystream-gke-nodes"
}

variable "dataset_id" {
  description = "BigQuery dataset the pipeline writes to; bigquery.dataEditor is granted on it alone."
  type        = string
}

variable "bucket_name" {
  description = "GCS bucket for temp files, templates and Flink state; storage.objectAdmin is granted on it alone."
  type        = string
}

variable "secret_ids" {
  description = "Secret Manager secret ids (or projects/P/secrets/S names) by purpose; secretAccessor is granted on each of them alone."
  type        = map(string)
  default     = {}
}

variable "workload_pool" {
  description = "Workload Identity pool of the GKE cluster (PROJECT.svc.id.goog); null: no Workload Identity binding (no GKE)."
  type        = string
  default     = null
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of the Flink deployment (k8s-flink/)."
  type        = string
  default     = "paystream"
}

variable "k8s_service_account" {
  description = "Kubernetes service account of the Flink pods (k8s-flink/base/serviceaccount.yaml)."
  type        = string
  default     = "paystream-flink"
}

variable "grant_bigquery_job_user" {
  description = "Grant bigquery.jobUser on the project to the pipeline identities: the lookup of stored payments before each write (query jobs) and BigQuery load jobs (batch writes) run as project jobs. It grants no data access."
  type        = bool
  default     = true
}

variable "grant_managed_kafka_client" {
  description = "Grant managedkafka.client on the project to the pipeline identities, to read the Managed Kafka topic."
  type        = bool
  default     = true
}

variable "grant_dataflow_worker" {
  description = "Grant dataflow.worker (and artifactregistry.reader for the launcher image) to the pipeline service account; needed only when the pipeline runs on Dataflow."
  type        = bool
  default     = false
}

variable "dataflow_launchers" {
  description = "Principals (user:..., group:..., serviceAccount:...) allowed to launch Dataflow jobs as the pipeline service account (iam.serviceAccountUser on that account only)."
  type        = list(string)
  default     = []
}
