resource "google_dataflow_flex_template_job" "this" {
  provider = google-beta

  project                 = var.project_id
  region                  = var.region
  name                    = var.job_name
  container_spec_gcs_path = var.template_spec_gcs_path
  parameters              = var.parameters
  labels                  = var.labels

  service_account_email   = var.service_account_email
  temp_location           = var.temp_location
  staging_location        = var.staging_location
  subnetwork              = var.subnetwork
  ip_configuration        = "WORKER_IP_PRIVATE"
  enable_streaming_engine = true
  machine_type            = var.machine_type
  max_workers             = var.max_workers
  kms_key_name            = var.kms_key_name
  on_delete               = var.on_delete
}
