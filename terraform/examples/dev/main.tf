# A small, cheap stack: zonal cluster on Spot VMs, one-node Redis, the smallest Kafka cluster.
module "paystream" {
  source = "../.."

  project_id          = var.project_id
  region              = var.region
  name                = "paystream-dev"
  dataset_id          = "paystream_dev"
  labels              = { app = "paystream", env = "dev" }
  deletion_protection = var.deletion_protection

  partition_expiration_days = {
    payment_transactions = 30
    fraud_alerts         = 30
    dead_letters         = 30
  }
  temp_retention_days               = 3
  noncurrent_version_retention_days = 7

  gke_location               = "${var.region}-b"
  master_authorized_networks = var.master_authorized_networks
  flink_machine_type         = "e2-standard-4"
  flink_min_nodes            = 1
  flink_max_nodes            = 2
  flink_spot                 = true

  redis_tier           = "BASIC"
  redis_memory_size_gb = 1

  kafka_vcpu_count = 3
  kafka_memory_gib = 3
  kafka_partitions = 4
}
