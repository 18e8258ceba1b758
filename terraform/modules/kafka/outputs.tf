output "bootstrap_servers" {
  description = "The pipeline's --kafka_bootstrap_servers: the created cluster's, or existing_bootstrap_servers."
  value       = var.create_kafka ? local.created_bootstrap : var.existing_bootstrap_servers

  precondition {
    condition     = var.create_kafka || length(trimspace(var.existing_bootstrap_servers)) > 0
    error_message = "create_kafka = false needs existing_bootstrap_servers."
  }
}

output "cluster_id" {
  description = "Id of the created Managed Kafka cluster (null when an existing cluster is used)."
  value       = var.create_kafka ? google_managed_kafka_cluster.this[0].cluster_id : null
}

output "topic" {
  description = "The payments topic (the pipeline's --kafka_topic)."
  value       = var.create_kafka ? google_managed_kafka_topic.payments[0].topic_id : var.topic
}
