output "name" {
  description = "The bucket name."
  value       = google_storage_bucket.this.name
}

output "url" {
  description = "The bucket URL (gs://NAME)."
  value       = google_storage_bucket.this.url
}

output "temp_location" {
  description = "Beam --temp_location (expires after temp_retention_days)."
  value       = "${google_storage_bucket.this.url}/${trimsuffix(var.temp_prefix, "/")}"
}

output "staging_location" {
  description = "Dataflow --staging_location (under the temp prefix, so it expires too)."
  value       = "${google_storage_bucket.this.url}/${trimsuffix(var.temp_prefix, "/")}/staging"
}

output "template_spec_prefix" {
  description = "Where flex template specs go (gcloud dataflow flex-template build gs://.../templates/paystream.json)."
  value       = "${google_storage_bucket.this.url}/templates"
}

output "flink_checkpoints_dir" {
  description = "Flink state.checkpoints.dir."
  value       = "${google_storage_bucket.this.url}/flink/checkpoints"
}

output "flink_savepoints_dir" {
  description = "Flink state.savepoints.dir."
  value       = "${google_storage_bucket.this.url}/flink/savepoints"
}

output "flink_ha_dir" {
  description = "Flink high-availability.storageDir."
  value       = "${google_storage_bucket.this.url}/flink/ha"
}
