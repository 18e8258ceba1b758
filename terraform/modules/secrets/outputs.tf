output "secret_ids" {
  description = "Secret id by purpose (hmac_key, redis_auth, kafka_sasl)."
  value       = { for purpose, secret in google_secret_manager_secret.this : purpose => secret.secret_id }
}

output "secret_names" {
  description = "Full secret resource name by purpose (projects/P/secrets/S), for IAM bindings and secret mounts."
  value       = { for purpose, secret in google_secret_manager_secret.this : purpose => secret.id }
}
