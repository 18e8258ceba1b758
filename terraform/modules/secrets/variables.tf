variable "project_id" {
  description = "Project that holds the secrets."
  type        = string
}

variable "secret_ids" {
  description = "Secret Manager secret ids by purpose. Only the containers are created; versions (the values) are added out of band."
  type = object({
    hmac_key   = string
    redis_auth = string
    kafka_sasl = string
  })
  default = {
    hmac_key   = "paystream-hmac-key"
    redis_auth = "paystream-redis-auth"
    kafka_sasl = "paystream-kafka-sasl"
  }
}

variable "replica_locations" {
  description = "Regions to replicate the secrets to (user-managed replication). Empty: automatic replication."
  type        = list(string)
  default     = []
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key for CMEK with automatic replication (a global key); null means Google-managed encryption."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to destroy the secrets (and with them every version). Keep true outside throw-away projects."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the secrets."
  type        = map(string)
  default     = {}
}
