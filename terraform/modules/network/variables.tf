variable "project_id" {
  description = "Project that holds the network."
  type        = string
}

variable "region" {
  description = "Region of the subnetwork, router and NAT."
  type        = string
}

variable "name" {
  description = "Name of the VPC network; the subnetwork, router and NAT are named after it."
  type        = string
  default     = "paystream"
}

variable "subnet_cidr" {
  description = "Primary range of the subnetwork (GKE nodes, Dataflow workers, Managed Kafka endpoints)."
  type        = string
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR block."
  }
}

variable "pods_cidr" {
  description = "Secondary range for GKE pods."
  type        = string
  default     = "10.20.0.0/14"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a CIDR block."
  }
}

variable "services_cidr" {
  description = "Secondary range for GKE services."
  type        = string
  default     = "10.24.0.0/20"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a CIDR block."
  }
}

variable "enable_nat" {
  description = "Create a Cloud Router and Cloud NAT so that private nodes and workers (no public IPs) can pull images and reach the internet."
  type        = bool
  default     = true
}
