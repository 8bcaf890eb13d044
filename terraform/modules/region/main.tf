resource "gtm_region" "this" {
  zone      = var.zone
  name      = var.name
  latitude  = var.latitude
  longitude = var.longitude
  country   = var.country
  continent = var.continent
}

resource "gtm_lb_pool" "this" {
  for_each        = var.pools
  region          = var.name
  name            = each.key
  backends        = each.value.backends
  algorithm       = each.value.algorithm
  slow_start      = each.value.slow_start
  max_connections = each.value.max_connections
  retries         = each.value.retries
  check           = each.value.check
}

resource "gtm_lb_listener" "this" {
  for_each = var.listeners
  region   = var.name
  name     = each.key
  bind     = each.value.bind
  # By reference: the pool is written first (a listener names an existing pool).
  pool   = gtm_lb_pool.this[each.value.pool].name
  mode   = each.value.mode
  h2c    = each.value.h2c
  tls    = each.value.tls
  routes = each.value.routes == null ? null : [for r in each.value.routes : merge(r, { pool = gtm_lb_pool.this[r.pool].name })]
}

locals {
  unit_name = "gtm-lb-${var.name}.service"
  state_dir = "/var/lib/gtm/lb-${var.name}"
  # systemd reads % as a specifier: a URL-encoded character must be doubled.
  serve = join(" ", compact([
    "${var.install_dir}/bin/gtm lb serve",
    "--control ${replace(var.control.store, "%", "%%")}",
    "--region ${var.name}",
    "--state-dir ${local.state_dir}",
    "--admin-token-file ${var.admin_token_file}",
    var.control.redis == null ? "" : "--redis ${replace(var.control.redis, "%", "%%")}",
    "--namespace ${var.control.namespace}",
  ]))
  unit = templatefile("${path.module}/templates/lb.service.tftpl", {
    region = var.name
    user   = var.user
    serve  = local.serve
  })
  toml = templatefile("${path.module}/templates/lb.toml.tftpl", {
    region    = var.name
    pools     = var.pools
    listeners = var.listeners
  })
}
