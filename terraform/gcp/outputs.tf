output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.main.name
}

output "region" {
  description = "Region of the cluster."
  value       = var.region
}

output "grid_zone" {
  description = "Electricity Maps zone the nodes are labelled with."
  value       = var.grid_zone
}

output "provider_keys_secret" {
  description = "Secret Manager secret to add the provider keys to (gcloud secrets versions add)."
  value       = google_secret_manager_secret.provider_keys.id
}

output "kubeconfig_command" {
  description = "Writes a kubeconfig entry for the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.main.name} --region ${var.region} --project ${var.project_id}"
}
