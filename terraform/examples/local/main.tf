# Four regions on this machine, against `gtm up` (see terraform/README.md, "The local
# example"): a zone of their own (tf.example.test) steered over the four regions `gtm up`
# runs balancers for, a pool and a listener added to each region's balancers, and what a
# real deployment of each would run (cloud-init, systemd units, TOML), as outputs.

terraform {
  required_version = ">= 1.11"
  required_providers {
    gtm = { source = "gtm/gtm" }
  }
}

variable "api" {
  type        = string
  default     = "http://127.0.0.1:8080"
  description = "The control API of `gtm up` (the token comes from GTM_TOKEN)"
}

variable "store" {
  type        = string
  default     = null
  description = "The store the rendered units follow (default: gtm up's, var/control/gtm.db of the repository)"
}

variable "install_dir" {
  type        = string
  default     = "/opt/gtm"
  description = "Where the rendered units find gtm (<dir>/bin/gtm)"
}

variable "gb" {
  type        = string
  default     = "eu-west"
  description = "The region clients in Great Britain are sent to (the tour changes it)"
}

provider "gtm" {
  api = var.api
  # What `terraform plan` shows a change of www.tf.example.test would do to clients there.
  vantage_points = {
    GB = "81.2.69.0/24"
    NL = "2.16.0.0/24"
    US = "8.8.8.0/24"
    BR = "200.160.2.0/24"
    JP = "133.1.1.0/24"
    AU = "1.1.1.0/24"
  }
}

locals {
  store = coalesce(var.store, "sqlite://${abspath("${path.root}/../../../var/control/gtm.db")}")
  # 127.0.N.x stands in for region N's network, as in `gtm up`'s own example regions.
  regions = {
    eu-west      = { n = 1, latitude = 53.35, longitude = -6.26, country = "IE", continent = "EU" }
    us-east      = { n = 2, latitude = 38.95, longitude = -77.45, country = "US", continent = "NA" }
    ap-northeast = { n = 3, latitude = 35.68, longitude = 139.69, country = "JP", continent = "AS" }
    sa-east      = { n = 4, latitude = -23.55, longitude = -46.63, country = "BR", continent = "SA" }
  }
}

resource "gtm_zone" "tf" {
  name = "tf.example.test"
  text = <<-EOT
    $TTL 60
    @    SOA  ns1 hostmaster 1 7200 1800 1209600 60
    @    NS   ns1
    ns1  A    127.0.0.1
  EOT
}

module "region" {
  source   = "../../modules/region"
  for_each = local.regions

  name      = each.key
  zone      = gtm_zone.tf.name
  latitude  = each.value.latitude
  longitude = each.value.longitude
  country   = each.value.country
  continent = each.value.continent
  endpoints = [{ name = "${each.key}-tf", ipv4 = "127.0.${each.value.n}.1" }]
  # gtm up's demo backends of the region, behind a pool and a listener of our own.
  pools = {
    tf-web = {
      backends = [
        { address = "127.0.${each.value.n}.101:9001" },
        { address = "127.0.${each.value.n}.102:9001" },
      ]
      algorithm = "least_request"
      check     = { type = "http", path = "/healthz", interval = 1, timeout = 0.5 }
    }
  }
  listeners = {
    tf-web = { bind = "127.0.${each.value.n}.1:8081", pool = "tf-web", h2c = true }
  }
  control     = { store = local.store }
  install_dir = var.install_dir
}

resource "gtm_pool" "web" {
  zone      = gtm_zone.tf.name
  name      = "web"
  endpoints = flatten([for region in module.region : region.endpoints])
  # Through each region's new listener: its health path answers while its pool can serve.
  check = {
    type     = "http"
    port     = 8081
    path     = "/.gtm/health"
    expect   = [200]
    interval = 1
    timeout  = 0.5
    rise     = 1
    fall     = 2
  }
}

resource "gtm_steered_name" "www" {
  zone = gtm_zone.tf.name
  name = "www"
  pool = gtm_pool.web.name
  ttl  = 30
  filters = [
    {
      type       = "geo"
      countries  = { GB = [var.gb], JP = ["ap-northeast"], BR = ["sa-east"] }
      continents = { EU = ["eu-west"], NA = ["us-east"], SA = ["sa-east"], AS = ["ap-northeast"] }
      default    = ["us-east"]
    },
  ]
  fallback = { addresses = ["127.0.9.1"] }
}

# A DNS node and the control API as a real deployment would run them against this store.
module "node" {
  source      = "../../modules/gtm-node"
  name        = "local-1"
  control     = { store = local.store }
  dns         = { listen = ["127.0.0.1:7053"], workers = 1 }
  api         = { listen = "127.0.0.1:8080", secret_key_file = abspath("${path.root}/../../../var/control/secret.key") }
  install_dir = var.install_dir
}

output "answers" {
  description = "www.tf.example.test as each vantage point's clients get it"
  value       = gtm_steered_name.www.simulated_answers
}

output "region_cloud_init" {
  value = { for name, region in module.region : name => region.cloud_init }
}

output "region_units" {
  value = { for name, region in module.region : region.unit_name => region.systemd_unit }
}

output "region_toml" {
  value = { for name, region in module.region : name => region.lb_toml }
}

output "node_cloud_init" {
  value = module.node.cloud_init
}

output "node_units" {
  value = module.node.systemd_units
}
