locals {
  bucket_name = coalesce(var.bucket_name, "${var.project_id}-${var.name}")

  network    = var.create_network ? module.network[0].network_id : var.network
  subnetwork = var.create_network ? module.network[0].subnetwork_id : var.subnetwork
  # Managed Kafka wants projects/P/regions/R/subnetworks/S, Dataflow regions/R/subnetworks/S.
  subnetwork_id       = replace(coalesce(local.subnetwork, "-"), "/^.*(projects/[^/]+/regions/[^/]+/subnetworks/[^/]+)$/", "$1")
  subnetwork_dataflow = replace(coalesce(local.subnetwork, "-"), "/^.*(regions/[^/]+/subnetworks/[^/]+)$/", "$1")
  pods_range_name     = var.create_network ? module.network[0].pods_range_name : var.pods_range_name
  services_range_name = var.create_network ? module.network[0].services_range_name : var.services_range_name

  apis = toset(concat(
    [
      "bigquery.googleapis.com",
      "compute.googleapis.com",
      "iam.googleapis.com",
      "secretmanager.googleapis.com",
      "storage.googleapis.com",
    ],
    var.create_gke ? ["container.googleapis.com"] : [],
    var.create_redis ? ["redis.googleapis.com"] : [],
    var.create_kafka ? ["managedkafka.googleapis.com"] : [],
    var.enable_dataflow ? ["dataflow.googleapis.com"] : [],
  ))

  dataflow_parameters = merge(
    {
      kafka_bootstrap_servers = module.kafka.bootstrap_servers
      kafka_topic             = module.kafka.topic
      warehouse               = module.bigquery.warehouse
    },
    var.dataflow_hmac_key_file == null ? {} : { hmac_key_file = var.dataflow_hmac_key_file },
    var.create_redis ? { redis_url = module.redis[0].redis_url } : {},
    var.dataflow_parameters,
  )
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? local.apis : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "network" {
  source = "./modules/network"
  count  = var.create_network ? 1 : 0

  project_id = var.project_id
  region     = var.region
  name       = var.name

  depends_on = [google_project_service.this]
}

module "bigquery" {
  source = "./modules/bigquery"

  project_id                = var.project_id
  dataset_id                = var.dataset_id
  location                  = coalesce(var.bigquery_location, var.region)
  schema_dir                = coalesce(var.bigquery_schema_dir, "${path.module}/../schemas/bigquery")
  deletion_protection       = var.deletion_protection
  kms_key_name              = var.kms_key_name
  partition_expiration_days = var.partition_expiration_days
  labels                    = var.labels

  depends_on = [google_project_service.this]
}

module "storage" {
  source = "./modules/storage"

  project_id                        = var.project_id
  name                              = local.bucket_name
  location                          = var.region
  temp_retention_days               = var.temp_retention_days
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  kms_key_name                      = var.kms_key_name
  labels                            = var.labels

  depends_on = [google_project_service.this]
}

module "secrets" {
  source = "./modules/secrets"

  project_id          = var.project_id
  replica_locations   = var.secrets_replica_locations
  kms_key_name        = var.secrets_kms_key_name
  deletion_protection = var.deletion_protection
  labels              = var.labels

  depends_on = [google_project_service.this]
}

module "kafka" {
  source = "./modules/kafka"

  project_id                 = var.project_id
  region                     = var.region
  create_kafka               = var.create_kafka
  existing_bootstrap_servers = var.existing_bootstrap_servers
  cluster_id                 = var.name
  subnetworks                = var.create_kafka ? [local.subnetwork_id] : []
  vcpu_count                 = var.kafka_vcpu_count
  memory_gib                 = var.kafka_memory_gib
  kms_key_name               = var.kms_key_name
  topic                      = var.kafka_topic
  partition_count            = var.kafka_partitions
  labels                     = var.labels

  depends_on = [google_project_service.this]
}

module "redis" {
  source = "./modules/redis"
  count  = var.create_redis ? 1 : 0

  project_id           = var.project_id
  region               = var.region
  name                 = var.name
  tier                 = var.redis_tier
  memory_size_gb       = var.redis_memory_size_gb
  authorized_network   = local.network
  customer_managed_key = var.kms_key_name
  labels               = var.labels

  depends_on = [google_project_service.this]
}

module "iam" {
  source = "./modules/iam"

  project_id                 = var.project_id
  dataset_id                 = module.bigquery.dataset_id
  bucket_name                = module.storage.name
  secret_ids                 = module.secrets.secret_ids
  workload_pool              = one(module.gke[*].workload_pool)
  grant_managed_kafka_client = var.create_kafka
  grant_dataflow_worker      = var.enable_dataflow
  dataflow_launchers         = var.dataflow_launchers

  depends_on = [google_project_service.this]
}

module "gke" {
  source = "./modules/gke"
  count  = var.create_gke ? 1 : 0

  project_id                 = var.project_id
  name                       = var.name
  location                   = coalesce(var.gke_location, var.region)
  network                    = local.network
  subnetwork                 = local.subnetwork
  pods_range_name            = local.pods_range_name
  services_range_name        = local.services_range_name
  master_ipv4_cidr_block     = var.master_ipv4_cidr_block
  master_authorized_networks = var.master_authorized_networks
  release_channel            = var.gke_release_channel
  node_service_account       = module.iam.nodes_service_account
  machine_type               = var.flink_machine_type
  min_node_count             = var.flink_min_nodes
  max_node_count             = var.flink_max_nodes
  spot                       = var.flink_spot
  database_encryption_key    = var.gke_database_encryption_key
  deletion_protection        = var.deletion_protection
  labels                     = var.labels

  depends_on = [google_project_service.this]
}

module "dataflow" {
  source = "./modules/dataflow"
  count  = var.enable_dataflow ? 1 : 0

  project_id             = var.project_id
  region                 = var.region
  job_name               = var.name
  template_spec_gcs_path = coalesce(var.dataflow_template_spec_gcs_path, "${module.storage.template_spec_prefix}/paystream.json")
  parameters             = local.dataflow_parameters
  service_account_email  = module.iam.pipeline_service_account
  temp_location          = module.storage.temp_location
  staging_location       = module.storage.staging_location
  subnetwork             = local.subnetwork_dataflow
  max_workers            = var.dataflow_max_workers
  kms_key_name           = var.kms_key_name
  labels                 = var.labels

  # The job's workers need their roles before they start.
  depends_on = [module.iam]
}
