variable "project_id" {
  description = "Project that holds the instance."
  type        = string
}

variable "region" {
  description = "Region of the instance (the pipeline's region)."
  type        = string
}

variable "name" {
  description = "Instance name."
  type        = string
  default     = "paystream"
}

variable "tier" {
  description = "BASIC (one node) or STANDARD_HA (primary and replica in two zones, automatic failover)."
  type        = string
  default     = "STANDARD_HA"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.tier)
    error_message = "tier must be BASIC or STANDARD_HA."
  }
}

variable "memory_size_gb" {
  description = "Memory of the instance in GiB (fraud alerts and their stream)."
  type        = number
  default     = 1

  validation {
    condition     = var.memory_size_gb >= 1 && var.memory_size_gb <= 300
    error_message = "memory_size_gb must be between 1 and 300."
  }
}

variable "redis_version" {
  description = "Redis version of the instance."
  type        = string
  default     = "REDIS_7_2"
}

variable "authorized_network" {
  description = "VPC network (id or self link) the instance is reachable from; it has a private IP only."
  type        = string
}

variable "connect_mode" {
  description = "DIRECT_PEERING (VPC peering, no prerequisites) or PRIVATE_SERVICE_ACCESS (needs a private services access connection on the network)."
  type        = string
  default     = "DIRECT_PEERING"

  validation {
    condition     = contains(["DIRECT_PEERING", "PRIVATE_SERVICE_ACCESS"], var.connect_mode)
    error_message = "connect_mode must be DIRECT_PEERING or PRIVATE_SERVICE_ACCESS."
  }
}

variable "reserved_ip_range" {
  description = "Optional IP range (CIDR or allocated range name) for the instance; null lets Memorystore choose."
  type        = string
  default     = null
}

variable "customer_managed_key" {
  description = "Optional Cloud KMS key for CMEK of the instance's data at rest; null means Google-managed encryption."
  type        = string
  default     = null
}

variable "rdb_snapshot_period" {
  description = "RDB snapshot period (ONE_HOUR, SIX_HOURS, TWELVE_HOURS, TWENTY_FOUR_HOURS), or null for no persistence."
  type        = string
  default     = "ONE_HOUR"

  validation {
    condition     = var.rdb_snapshot_period == null || contains(["ONE_HOUR", "SIX_HOURS", "TWELVE_HOURS", "TWENTY_FOUR_HOURS"], coalesce(var.rdb_snapshot_period, "-"))
    error_message = "rdb_snapshot_period must be ONE_HOUR, SIX_HOURS, TWELVE_HOURS, TWENTY_FOUR_HOURS or null."
  }
}

variable "redis_configs" {
  description = "Redis configuration parameters (e.g. { maxmemory-policy = \"volatile-lru\" })."
  type        = map(string)
  default     = {}
}

variable "maintenance_day" {
  description = "Day of the weekly maintenance window (MONDAY ... SUNDAY)."
  type        = string
  default     = "SUNDAY"

  validation {
    condition     = contains(["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"], var.maintenance_day)
    error_message = "maintenance_day must be a day name in capitals."
  }
}

variable "maintenance_hour" {
  description = "Start hour (UTC) of the weekly maintenance window."
  type        = number
  default     = 3

  validation {
    condition     = var.maintenance_hour >= 0 && var.maintenance_hour <= 23
    error_message = "maintenance_hour must be 0-23."
  }
}

variable "labels" {
  description = "Labels for the instance."
  type        = map(string)
  default     = {}
}
