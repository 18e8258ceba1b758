locals {
  # Managed Kafka's bootstrap address (SASL on 9092; clients authenticate as a service account).
  created_bootstrap = "bootstrap.${var.cluster_id}.${var.region}.managedkafka.${var.project_id}.cloud.goog:9092"
}

resource "google_managed_kafka_cluster" "this" {
  count = var.create_kafka ? 1 : 0

  project    = var.project_id
  location   = var.region
  cluster_id = var.cluster_id
  labels     = var.labels

  capacity_config {
    vcpu_count   = var.vcpu_count
    memory_bytes = var.memory_gib * 1024 * 1024 * 1024
  }

  gcp_config {
    kms_key = var.kms_key_name

    access_config {
      dynamic "network_configs" {
        for_each = var.subnetworks
        content {
          subnet = network_configs.value
        }
      }
    }
  }

  rebalance_config {
    mode = "AUTO_REBALANCE_ON_SCALE_UP"
  }

  lifecycle {
    precondition {
      condition     = length(var.subnetworks) > 0
      error_message = "create_kafka = true needs at least one subnetwork in subnetworks."
    }
  }
}

resource "google_managed_kafka_topic" "payments" {
  count = var.create_kafka ? 1 : 0

  project            = var.project_id
  location           = var.region
  cluster            = google_managed_kafka_cluster.this[0].cluster_id
  topic_id           = var.topic
  partition_count    = var.partition_count
  replication_factor = var.replication_factor

  configs = {
    "cleanup.policy" = "delete"
    "retention.ms"   = tostring(var.retention_hours * 3600 * 1000)
  }
}
