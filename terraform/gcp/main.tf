# A regional GKE cluster (control plane and nodes over the region's zones),
# the provider keys in Secret Manager synced into the cluster by the External
# Secrets Operator (Workload Identity, no key files), and the Carbon-Kube
# chart from this repository.

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "current" {}

data "google_project" "current" {
  project_id = var.project_id
}

provider "helm" {
  kubernetes = {
    host                   = "https://${google_container_cluster.main.endpoint}"
    token                  = data.google_client_config.current.access_token
    cluster_ca_certificate = base64decode(google_container_cluster.main.master_auth[0].cluster_ca_certificate)
  }
}

locals {
  # The Kubernetes Secret the operator writes and the chart reads.
  provider_keys_k8s_secret = "carbon-kube-provider-keys"
  eso_namespace            = "external-secrets"
  eso_service_account      = "external-secrets"
  grid_zones               = distinct(concat([var.grid_zone], var.extra_grid_zones))
  chart_dir                = "${path.module}/../../charts/carbon-kube"
  labels = {
    "app-kubernetes-io-part-of" = "carbon-kube"
  }
}

resource "google_project_service" "apis" {
  for_each           = toset(["container.googleapis.com", "secretmanager.googleapis.com", "compute.googleapis.com"])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Network: nodes in a private subnet, egress through Cloud NAT (image pulls,
# carbon APIs), pods and services in secondary ranges (VPC-native).
resource "google_compute_network" "main" {
  name                    = var.cluster_name
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

# Everything not allowed by GKE's own rules (priority 1000) is denied.
resource "google_compute_firewall" "deny_ingress" {
  name          = "${var.cluster_name}-deny-ingress"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  priority      = 65534
  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "nodes" {
  name                     = "${var.cluster_name}-nodes"
  region                   = var.region
  network                  = google_compute_network.main.id
  ip_cidr_range            = "10.10.0.0/20"
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.20.0.0/14"
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.30.0.0/20"
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "nat" {
  name    = "${var.cluster_name}-nat"
  region  = var.region
  network = google_compute_network.main.id
}

resource "google_compute_router_nat" "nat" {
  name                               = "${var.cluster_name}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# The nodes' own identity: logs, metrics and image pulls only.
resource "google_service_account" "nodes" {
  account_id   = "${substr(var.cluster_name, 0, 24)}-nodes"
  display_name = "Carbon-Kube GKE nodes"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "main" {
  #checkov:skip=CKV_GCP_12:Network policy is enforced by Dataplane V2 (datapath_provider ADVANCED_DATAPATH), which checkov does not recognise.
  #checkov:skip=CKV_GCP_69:The GKE metadata server is set on the node pool (workload_metadata_config GKE_METADATA); the default pool is removed.
  #checkov:skip=CKV_GCP_65:RBAC through Google Groups needs the organisation's Workspace group (authenticator_groups_config); left to the platform team.
  name     = var.cluster_name
  location = var.region # regional: control plane replicated over the region's zones

  network         = google_compute_network.main.id
  subnetwork      = google_compute_subnetwork.nodes.id
  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  # Node pools are managed below; GKE needs one node to create the cluster.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  # Dataplane V2 enforces the chart's NetworkPolicies.
  datapath_provider = "ADVANCED_DATAPATH"

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        cidr_block   = cidr_blocks.value
        display_name = "authorized-${cidr_blocks.key}"
      }
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # Enforced with the project's policy (allow-all until the platform team sets one).
  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS", "APISERVER"]
  }

  resource_labels     = local.labels
  deletion_protection = var.deletion_protection
  depends_on          = [google_project_service.apis]
}

# One regional node pool: nodes_per_zone nodes in each zone of the region.
# GKE sets topology.kubernetes.io/region and /zone on every node; the
# grid-zone label makes the zone the poller fetches and the zone the extender
# looks up the same by construction.
resource "google_container_node_pool" "nodes" {
  name           = "nodes"
  cluster        = google_container_cluster.main.id
  location       = var.region
  node_locations = length(var.node_zones) > 0 ? var.node_zones : null
  node_count     = var.nodes_per_zone

  autoscaling {
    min_node_count = var.nodes_per_zone
    max_node_count = var.nodes_per_zone * 3
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.machine_type
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    labels = {
      "carbon-kube.io/grid-zone" = var.grid_zone
    }
    resource_labels = local.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

# The provider keys: created empty, the operator adds a version with
# `gcloud secrets versions add` (docs/deploy.md). Terraform never sees them.
resource "google_secret_manager_secret" "provider_keys" {
  secret_id = var.provider_keys_secret_id
  labels    = local.labels

  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# Only the External Secrets Operator reads it, through Workload Identity
# Federation for GKE (its Kubernetes service account is the principal; no
# Google service account, no key). No Carbon-Kube component has a cloud identity.
resource "google_secret_manager_secret_iam_member" "eso" {
  secret_id = google_secret_manager_secret.provider_keys.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "principal://iam.googleapis.com/projects/${data.google_project.current.number}/locations/global/workloadIdentityPools/${var.project_id}.svc.id.goog/subject/ns/${local.eso_namespace}/sa/${local.eso_service_account}"
}

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = var.eso_chart_version
  namespace        = local.eso_namespace
  create_namespace = true
  wait             = true

  values = [yamlencode({
    installCRDs    = true
    serviceAccount = { create = true, name = local.eso_service_account }
  })]

  depends_on = [google_container_node_pool.nodes]
}

# SecretStore + ExternalSecret as a small local chart: the CRDs exist only
# after the operator is installed, which a chart (unlike kubernetes_manifest)
# does not need at plan time.
resource "helm_release" "provider_keys_sync" {
  name             = "carbon-kube-provider-keys"
  chart            = "${path.module}/charts/provider-keys-sync"
  namespace        = "carbon-kube"
  create_namespace = true

  values = [yamlencode({
    gcpProjectId = var.project_id
    remoteSecret = google_secret_manager_secret.provider_keys.secret_id
    targetSecret = local.provider_keys_k8s_secret
  })]

  depends_on = [helm_release.external_secrets, google_secret_manager_secret_iam_member.eso]
}

resource "helm_release" "carbon_kube" {
  name             = "carbon-kube"
  chart            = local.chart_dir
  namespace        = "carbon-kube"
  create_namespace = true
  wait             = true
  timeout          = 600

  values = [
    yamlencode({
      existingSecret  = local.provider_keys_k8s_secret
      electricityMaps = { zones = local.grid_zones }
    }),
    yamlencode(var.chart_values),
  ]

  depends_on = [helm_release.provider_keys_sync]
}
