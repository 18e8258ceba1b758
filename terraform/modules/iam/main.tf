resource "google_service_account" "pipeline" {
  project      = var.project_id
  account_id   = var.pipeline_account_id
  display_name = "paystream pipeline workers"
  description  = "Dataflow workers and the flex template launcher of the paystream pipeline."
}

resource "google_service_account" "flink" {
  project      = var.project_id
  account_id   = var.flink_account_id
  display_name = "paystream Flink (Workload Identity)"
  description  = "Used by the Flink JobManager and TaskManagers through Workload Identity."
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = var.nodes_account_id
  display_name = "paystream GKE nodes"
  description  = "GKE node identity: writes logs and metrics, pulls images. No data access."
}

locals {
  # Both identities run the same pipeline code, so they get the same data access.
  pipeline_members = {
    pipeline = "serviceAccount:${google_service_account.pipeline.email}"
    flink    = "serviceAccount:${google_service_account.flink.email}"
  }

  project_roles = merge(
    var.grant_bigquery_job_user ? { for k, m in local.pipeline_members : "${k}/bigquery.jobUser" => { member = m, role = "roles/bigquery.jobUser" } } : {},
    var.grant_managed_kafka_client ? { for k, m in local.pipeline_members : "${k}/managedkafka.client" => { member = m, role = "roles/managedkafka.client" } } : {},
    var.grant_dataflow_worker ? {
      "pipeline/dataflow.worker"         = { member = local.pipeline_members.pipeline, role = "roles/dataflow.worker" }
      "pipeline/artifactregistry.reader" = { member = local.pipeline_members.pipeline, role = "roles/artifactregistry.reader" }
    } : {},
    {
      for role in [
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/monitoring.viewer",
        "roles/stackdriver.resourceMetadata.writer",
        "roles/artifactregistry.reader",
      ] : "nodes/${trimprefix(role, "roles/")}" => { member = "serviceAccount:${google_service_account.nodes.email}", role = role }
    },
  )

  secret_grants = {
    for pair in setproduct(keys(local.pipeline_members), keys(var.secret_ids)) :
    "${pair[0]}/${pair[1]}" => { member = local.pipeline_members[pair[0]], secret_id = var.secret_ids[pair[1]] }
  }
}

resource "google_project_iam_member" "this" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

resource "google_bigquery_dataset_iam_member" "data_editor" {
  for_each = local.pipeline_members

  project    = var.project_id
  dataset_id = var.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = each.value
}

resource "google_storage_bucket_iam_member" "object_admin" {
  for_each = local.pipeline_members

  bucket = var.bucket_name
  role   = "roles/storage.objectAdmin"
  member = each.value
}

resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}

# Flink pods (KSA paystream/paystream-flink) act as the Flink service account.
resource "google_service_account_iam_member" "flink_workload_identity" {
  count = var.workload_pool == null ? 0 : 1

  service_account_id = google_service_account.flink.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_pool}[${var.k8s_namespace}/${var.k8s_service_account}]"
}

resource "google_service_account_iam_member" "dataflow_launcher" {
  for_each = toset(var.dataflow_launchers)

  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}
