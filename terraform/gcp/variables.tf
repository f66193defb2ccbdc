variable "project_id" {
  description = "GCP project to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id: 6-30 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "GCP region of the regional GKE cluster, e.g. europe-north1."
  type        = string
  default     = "europe-north1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a GCP region such as europe-north1 or us-central1."
  }
}

variable "grid_zone" {
  description = "Electricity Maps zone of the region (labelled on every node as carbon-kube.io/grid-zone and polled). The built-in table maps europe-north1 to FI; see docs/deploy.md."
  type        = string
  default     = "FI"

  validation {
    condition     = can(regex("^[A-Z]{2}(-[A-Z0-9]+)*$", var.grid_zone))
    error_message = "grid_zone must be an Electricity Maps zone id such as FI, DE or US-MIDW-MISO."
  }
}

variable "extra_grid_zones" {
  description = "Further grid zones the poller fetches, e.g. those of your other clusters (multi-cluster spreading)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for z in var.extra_grid_zones : can(regex("^[A-Z]{2}(-[A-Z0-9]+)*$", z))])
    error_message = "extra_grid_zones must be Electricity Maps zone ids such as DE or US-CAL-CISO."
  }
}

variable "cluster_name" {
  description = "Name of the GKE cluster (and prefix of the network resources)."
  type        = string
  default     = "carbon-kube"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be 1-40 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "release_channel" {
  description = "GKE release channel: RAPID, REGULAR or STABLE."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "node_zones" {
  description = "Zones of the region the node pool spans (empty: GKE's default zones of the region)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for z in var.node_zones : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", z))])
    error_message = "node_zones must be GCP zones such as europe-north1-a."
  }
}

variable "machine_type" {
  description = "Machine type of the nodes."
  type        = string
  default     = "e2-standard-4"
}

variable "nodes_per_zone" {
  description = "Nodes per zone at start and the autoscaler's minimum (the maximum is three times this)."
  type        = number
  default     = 1

  validation {
    condition     = var.nodes_per_zone >= 1 && var.nodes_per_zone <= 100 && floor(var.nodes_per_zone) == var.nodes_per_zone
    error_message = "nodes_per_zone must be a whole number from 1 to 100."
  }
}

variable "master_authorized_cidrs" {
  description = "CIDR blocks allowed to reach the cluster's API endpoint: where you run terraform (the Helm provider installs the charts through it), your office or CI, e.g. [\"203.0.113.7/32\"]."
  type        = list(string)

  validation {
    condition     = length(var.master_authorized_cidrs) > 0 && alltrue([for c in var.master_authorized_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "master_authorized_cidrs must be one or more CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "provider_keys_secret_id" {
  description = "Secret Manager secret (a JSON object: electricity-maps-key, noaa-key, watttime-username, watttime-password, all optional) created empty here; add a version with the keys after apply."
  type        = string
  default     = "carbon-kube-provider-keys"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.provider_keys_secret_id))
    error_message = "provider_keys_secret_id must be 1-255 letters, digits, underscores or hyphens."
  }
}

variable "chart_values" {
  description = "Helm values of the carbon-kube chart, merged over the module's own (existingSecret, electricityMaps.zones). Never API keys: they live in Secret Manager."
  type        = any
  default     = {}

  validation {
    condition = alltrue([
      !can(var.chart_values.electricityMaps.apiKey),
      !can(var.chart_values.noaa.apiKey),
      !can(var.chart_values.watttime.username),
      !can(var.chart_values.watttime.password),
      !can(var.chart_values.existingSecret),
    ])
    error_message = "chart_values must not set electricityMaps.apiKey, noaa.apiKey, watttime.username/password or existingSecret: keys go into the Secret Manager secret provider_keys_secret_id (docs/deploy.md)."
  }
}

variable "eso_chart_version" {
  description = "Version of the External Secrets Operator chart (syncs the Secret Manager secret into the cluster)."
  type        = string
  default     = "1.3.2"
}

variable "deletion_protection" {
  description = "Protect the cluster from `terraform destroy` (set false before tearing down)."
  type        = bool
  default     = true
}
