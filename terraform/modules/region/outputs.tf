output "name" {
  value = gtm_region.this.name
}

output "endpoints" {
  description = "The region's endpoints, for the zone's gtm_pool (region filled in)"
  value       = [for e in var.endpoints : merge(e, { region = gtm_region.this.name })]
}

output "systemd_unit" {
  description = "A systemd unit running `gtm lb serve --control ... --region NAME` (install it as unit_name)"
  value       = local.unit
}

output "unit_name" {
  value = local.unit_name
}

output "lb_toml" {
  description = "The region's [lb] table as a TOML file, for `gtm lb serve --config` (deployments without the control plane) and `gtm lb serve --check`"
  value       = local.toml
}

output "cloud_init" {
  description = "A cloud-init document for a machine of this region: installs the package, the unit, an admin token of the host's own, and starts the balancer"
  value = "#cloud-config\n${yamlencode({
    users    = ["default", { name = var.user, system = true, shell = "/usr/sbin/nologin", homedir = "/var/lib/gtm" }]
    packages = ["python3", "python3-venv"]
    write_files = [
      { path = "/etc/systemd/system/${local.unit_name}", permissions = "0644", content = local.unit },
      { path = "/etc/gtm/lb-${var.name}.toml", permissions = "0644", content = local.toml },
    ]
    runcmd = [
      ["python3", "-m", "venv", var.install_dir],
      ["${var.install_dir}/bin/pip", "install", var.package],
      ["sh", "-c", "umask 077 && mkdir -p ${dirname(var.admin_token_file)} && { [ -s ${var.admin_token_file} ] || head -c 32 /dev/urandom | base64 > ${var.admin_token_file}; } && chown ${var.user} ${var.admin_token_file}"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", local.unit_name],
    ]
  })}"
}
