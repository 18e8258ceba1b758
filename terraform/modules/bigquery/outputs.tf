output "dataset_id" {
  description = "The dataset id."
  value       = google_bigquery_dataset.this.dataset_id
}

output "dataset_resource_id" {
  description = "The dataset's full resource id (projects/P/datasets/D)."
  value       = google_bigquery_dataset.this.id
}

output "table_ids" {
  description = "Table name to full table id (projects/P/datasets/D/tables/T)."
  value       = { for name, table in google_bigquery_table.this : name => table.id }
}

output "warehouse" {
  description = "The pipeline's --warehouse value for this dataset."
  value       = "bigquery:${var.project_id}:${google_bigquery_dataset.this.dataset_id}"
}
