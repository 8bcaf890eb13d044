locals {
  escape = { for k, v in { store = var.control.store, redis = var.control.redis } :
  k => v == null ? null : replace(v, "%", "%%") }
  follow = compact([
    "--control ${local.escape.store}",
    local.escape.redis == null ? "" : "--redis ${local.escape.redis}",
    "--namespace ${var.control.namespace}",
  ])
  dns_command = var.dns == null ? null : join(" ", concat(
    ["${var.install_dir}/bin/gtm serve", "--node-id ${var.name}", "--state-dir /var/lib/gtm/dns-${var.name}"],
    local.follow,
    [for address in var.dns.listen : "--listen ${address}"],
    var.dns.workers == null ? [] : ["--workers ${var.dns.workers}"],
    var.dns.nsid == null ? [] : ["--nsid ${var.dns.nsid}"],
    var.dns.probe ? ["--probe"] : [],
  ))
  api_command = var.api == null ? null : join(" ", concat(
    [
      "${var.install_dir}/bin/gtm api",
      "--listen ${var.api.listen}",
      "--postgres ${local.escape.store}",
      "--namespace ${var.control.namespace}",
      "--state-dir /var/lib/gtm/api-${var.name}",
      "--secret-key-file ${var.api.secret_key_file}",
    ],
    local.escape.redis == null ? [] : ["--redis ${local.escape.redis}"],
    var.api.tls_cert == null ? [] : ["--tls-cert ${var.api.tls_cert}", "--tls-key ${var.api.tls_key}"],
  ))
  units = merge(
    var.dns == null ? {} : { "gtm-dns-${var.name}.service" = templatefile("${path.module}/templates/node.service.tftpl", {
      description = "gtm DNS node ${var.name} (follows the control plane)"
      user        = var.user
      state       = "gtm/dns-${var.name}"
      command     = local.dns_command
      bind_low    = true
    }) },
    var.api == null ? {} : { "gtm-api-${var.name}.service" = templatefile("${path.module}/templates/node.service.tftpl", {
      description = "gtm control-plane API ${var.name}"
      user        = var.user
      state       = "gtm/api-${var.name}"
      command     = local.api_command
      bind_low    = false
    }) },
  )
}
