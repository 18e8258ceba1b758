variable "project_id" {
  description = "Project that holds the cluster."
  type        = string
}

variable "name" {
  description = "Cluster name."
  type        = string
  default     = "paystream"
}

variable "location" {
  description = "Region (regional cluster, control plane and nodes in three zones) or zone (zonal cluster) of the cluster."
  type        = string
}

variable "network" {
  description = "VPC network (id or self link) of the cluster."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork (id or self link) of the nodes; it needs the two secondary ranges below."
  type        = string
}

variable "pods_range_name" {
  description = "Name of the subnetwork's secondary range for pods (VPC-native cluster)."
  type        = string
}

variable "services_range_name" {
  description = "Name of the subnetwork's secondary range for services (VPC-native cluster)."
  type        = string
}

variable "master_ipv4_cidr_block" {
  description = "/28 range for the control plane's private endpoint; must not overlap the subnetwork."
  type        = string
  default     = "172.16.0.0/28"

  validation {
    condition     = can(cidrhost(var.master_ipv4_cidr_block, 0)) && endswith(var.master_ipv4_cidr_block, "/28")
    error_message = "master_ipv4_cidr_block must be a /28 CIDR block."
  }
}

variable "enable_private_endpoint" {
  description = "Serve the control plane on its private endpoint only (kubectl then needs to run inside the VPC or through a bastion)."
  type        = bool
  default     = false
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the control plane's endpoint. Empty: no outside network (only the VPC's own ranges)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0)) && n.cidr_block != "0.0.0.0/0"])
    error_message = "Each cidr_block must be a CIDR block, and 0.0.0.0/0 is not allowed."
  }
}

variable "release_channel" {
  description = "GKE release channel, which drives automatic control plane and node upgrades."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE", "EXTENDED"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR, STABLE or EXTENDED."
  }
}

variable "node_service_account" {
  description = "Email of the least-privilege service account the nodes run as (never the Compute Engine default account)."
  type        = string
}

variable "machine_type" {
  description = "Machine type of the Flink node pool (JobManager and TaskManagers with their Python SDK workers)."
  type        = string
  default     = "e2-standard-4"
}

variable "disk_size_gb" {
  description = "Boot disk size of each Flink node, in GB (local state spills and container images)."
  type        = number
  default     = 100

  validation {
    condition     = var.disk_size_gb >= 20
    error_message = "disk_size_gb must be at least 20."
  }
}

variable "disk_type" {
  description = "Boot disk type of each Flink node."
  type        = string
  default     = "pd-balanced"
}

variable "min_node_count" {
  description = "Autoscaler minimum of the Flink node pool, per zone of the cluster's location."
  type        = number
  default     = 1

  validation {
    condition     = var.min_node_count >= 0
    error_message = "min_node_count must be 0 or more."
  }
}

variable "max_node_count" {
  description = "Autoscaler maximum of the Flink node pool, per zone of the cluster's location (must be >= min_node_count)."
  type        = number
  default     = 3

  validation {
    condition     = var.max_node_count >= 1
    error_message = "max_node_count must be 1 or more."
  }
}

variable "spot" {
  description = "Run the Flink nodes on Spot VMs (cheaper; nodes can be reclaimed, and the job restarts from its last checkpoint)."
  type        = bool
  default     = false
}

variable "database_encryption_key" {
  description = "Optional Cloud KMS key for application-layer encryption of Kubernetes Secrets in etcd; null keeps Google's default encryption."
  type        = string
  default     = null
}

variable "rbac_security_group" {
  description = "Optional Google Group for RBAC (gke-security-groups@YOUR_DOMAIN); null turns Google Groups for RBAC off."
  type        = string
  default     = null
}

variable "enable_binary_authorization" {
  description = "Enforce the project's Binary Authorization policy on the cluster."
  type        = bool
  default     = true
}

variable "maintenance_start_time" {
  description = "Daily maintenance window start, HH:MM in UTC."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_start_time))
    error_message = "maintenance_start_time must be HH:MM."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the cluster. Keep true outside throw-away projects."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the cluster and nodes."
  type        = map(string)
  default     = {}
}
