variable "project_id" {
  description = "GCP project of the dev stack."
  type        = string
}

variable "region" {
  description = "Region of the dev stack."
  type        = string
  default     = "europe-west1"
}

variable "master_authorized_networks" {
  description = "CIDR blocks (e.g. your office or VPN egress, /32) allowed to reach the GKE control plane."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "deletion_protection" {
  description = "Refuse to destroy tables, cluster and secrets. Set false only for a throw-away dev project."
  type        = bool
  default     = true
}
