output "id" {
  description = "The instance id."
  value       = google_redis_instance.this.id
}

output "host" {
  description = "Private IP of the instance."
  value       = google_redis_instance.this.host
}

output "port" {
  description = "Port of the instance (TLS)."
  value       = google_redis_instance.this.port
}

output "redis_url" {
  description = "The pipeline's --redis_url (rediss://, TLS); the AUTH string goes in --redis_password_file."
  value       = "rediss://${google_redis_instance.this.host}:${google_redis_instance.this.port}/0"
}

output "server_ca_certs" {
  description = "CA certificates that sign the instance's TLS certificate (public; clients verify the server with them)."
  value       = [for c in google_redis_instance.this.server_ca_certs : c.cert]
}

output "auth_string_command" {
  description = "The gcloud command that prints the AUTH string, to copy into Secret Manager out of band."
  value       = "gcloud redis instances get-auth-string ${google_redis_instance.this.name} --region ${var.region} --project ${var.project_id}"
}
