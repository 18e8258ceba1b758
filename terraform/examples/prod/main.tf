# Production: regional cluster, HA Redis, CMEK where a key is given, deletion protection on.
module "paystream" {
  source = "../.."

  project_id          = var.project_id
  region              = var.region
  name                = "paystream"
  dataset_id          = "paystream"
  labels              = { app = "paystream", env = "prod" }
  deletion_protection = true
  kms_key_name        = var.kms_key_name

  partition_expiration_days = {
    dead_letters = 400
  }

  master_authorized_networks  = var.master_authorized_networks
  gke_release_channel         = "STABLE"
  gke_database_encryption_key = var.gke_database_encryption_key
  flink_machine_type          = "n2-standard-8"
  flink_min_nodes             = 1
  flink_max_nodes             = 4

  redis_tier           = "STANDARD_HA"
  redis_memory_size_gb = 5

  kafka_vcpu_count = 6
  kafka_memory_gib = 24
  kafka_partitions = 12

  enable_dataflow        = var.enable_dataflow
  dataflow_hmac_key_file = var.dataflow_hmac_key_file
  dataflow_launchers     = var.dataflow_launchers
  dataflow_max_workers   = 10
}
