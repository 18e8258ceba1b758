output "cluster_name" {
  description = "The cluster name."
  value       = google_container_cluster.this.name
}

output "cluster_id" {
  description = "The cluster id (projects/P/locations/L/clusters/C)."
  value       = google_container_cluster.this.id
}

output "location" {
  description = "The cluster's region or zone."
  value       = google_container_cluster.this.location
}

output "endpoint" {
  description = "The control plane's endpoint."
  value       = google_container_cluster.this.endpoint
  sensitive   = true
}

output "ca_certificate" {
  description = "The cluster's CA certificate (base64)."
  value       = google_container_cluster.this.master_auth[0].cluster_ca_certificate
  sensitive   = true
}

output "workload_pool" {
  description = "The Workload Identity pool (PROJECT.svc.id.goog)."
  value       = google_container_cluster.this.workload_identity_config[0].workload_pool
}

output "flink_node_pool" {
  description = "Name of the Flink node pool."
  value       = google_container_node_pool.flink.name
}

output "get_credentials_command" {
  description = "The gcloud command that configures kubectl for the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --location ${google_container_cluster.this.location} --project ${var.project_id}"
}
