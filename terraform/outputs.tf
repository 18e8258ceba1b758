output "warehouse" {
  description = "The pipeline's --warehouse (bigquery:PROJECT:DATASET)."
  value       = module.bigquery.warehouse
}

output "bigquery_tables" {
  description = "Table name to full table id."
  value       = module.bigquery.table_ids
}

output "bucket" {
  description = "The bucket for temp files, templates and Flink state."
  value       = module.storage.name
}

output "flink_state_dirs" {
  description = "Flink's checkpoint, savepoint and HA directories (k8s-flink/base/flinkdeployment.yaml)."
  value = {
    checkpoints = module.storage.flink_checkpoints_dir
    savepoints  = module.storage.flink_savepoints_dir
    ha          = module.storage.flink_ha_dir
  }
}

output "temp_location" {
  description = "Beam --temp_location."
  value       = module.storage.temp_location
}

output "kafka_bootstrap_servers" {
  description = "The pipeline's --kafka_bootstrap_servers."
  value       = module.kafka.bootstrap_servers
}

output "kafka_topic" {
  description = "The pipeline's --kafka_topic."
  value       = module.kafka.topic
}

output "redis_url" {
  description = "The pipeline's --redis_url (TLS), or null without Redis."
  value       = one(module.redis[*].redis_url)
}

output "redis_server_ca_certs" {
  description = "CA certificates to verify Redis's TLS certificate."
  value       = one(module.redis[*].server_ca_certs)
}

output "redis_auth_string_command" {
  description = "Prints the Redis AUTH string, to copy into the redis_auth secret out of band."
  value       = one(module.redis[*].auth_string_command)
}

output "secret_ids" {
  description = "Secret Manager secret ids by purpose (created empty)."
  value       = module.secrets.secret_ids
}

output "service_accounts" {
  description = "Service account emails: pipeline (Dataflow), flink (Workload Identity), nodes (GKE)."
  value = {
    pipeline = module.iam.pipeline_service_account
    flink    = module.iam.flink_service_account
    nodes    = module.iam.nodes_service_account
  }
}

output "gke_cluster" {
  description = "The GKE cluster name, or null without GKE."
  value       = one(module.gke[*].cluster_name)
}

output "gke_get_credentials_command" {
  description = "Configures kubectl for the cluster."
  value       = one(module.gke[*].get_credentials_command)
}

output "network" {
  description = "The VPC network used."
  value       = local.network

  precondition {
    condition     = var.create_network || (var.network != null && var.subnetwork != null)
    error_message = "create_network = false needs network and subnetwork."
  }
}

output "dataflow_job_id" {
  description = "The Dataflow job id, or null when enable_dataflow is false."
  value       = one(module.dataflow[*].job_id)
}
