output "network_id" {
  description = "The network's id (projects/P/global/networks/N)."
  value       = google_compute_network.this.id
}

output "network_self_link" {
  description = "The network's self link."
  value       = google_compute_network.this.self_link
}

output "subnetwork_id" {
  description = "The subnetwork's id (projects/P/regions/R/subnetworks/S)."
  value       = google_compute_subnetwork.this.id
}

output "subnetwork_self_link" {
  description = "The subnetwork's self link."
  value       = google_compute_subnetwork.this.self_link
}

output "pods_range_name" {
  description = "Name of the secondary range for GKE pods."
  value       = google_compute_subnetwork.this.secondary_ip_range[0].range_name
}

output "services_range_name" {
  description = "Name of the secondary range for GKE services."
  value       = google_compute_subnetwork.this.secondary_ip_range[1].range_name
}
