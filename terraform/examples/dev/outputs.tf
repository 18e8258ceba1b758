output "paystream" {
  description = "Everything the pipeline and the Flink manifests need (warehouse, bucket, Kafka, Redis, service accounts)."
  value = {
    warehouse               = module.paystream.warehouse
    bucket                  = module.paystream.bucket
    temp_location           = module.paystream.temp_location
    flink_state_dirs        = module.paystream.flink_state_dirs
    kafka_bootstrap_servers = module.paystream.kafka_bootstrap_servers
    kafka_topic             = module.paystream.kafka_topic
    redis_url               = module.paystream.redis_url
    secret_ids              = module.paystream.secret_ids
    service_accounts        = module.paystream.service_accounts
    gke_get_credentials     = module.paystream.gke_get_credentials_command
    redis_auth_string       = module.paystream.redis_auth_string_command
  }
}
