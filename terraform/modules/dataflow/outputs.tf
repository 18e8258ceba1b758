output "job_id" {
  description = "The Dataflow job id."
  value       = google_dataflow_flex_template_job.this.job_id
}

output "job_state" {
  description = "The job's state when Terraform last saw it."
  value       = google_dataflow_flex_template_job.this.state
}
