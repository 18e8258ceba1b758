output "pipeline_service_account" {
  description = "Email of the pipeline workers' service account (Dataflow --service_account_email)."
  value       = google_service_account.pipeline.email
}

output "flink_service_account" {
  description = "Email of the Flink service account (annotation iam.gke.io/gcp-service-account of the KSA)."
  value       = google_service_account.flink.email
}

output "nodes_service_account" {
  description = "Email of the GKE nodes' service account."
  value       = google_service_account.nodes.email
}

output "project_roles" {
  description = "Project-level roles granted, as member => roles (no primitive roles)."
  value = {
    for member in distinct([for g in values(local.project_roles) : g.member]) :
    member => sort([for g in values(local.project_roles) : g.role if g.member == member])
  }
}
