output "systemd_units" {
  description = "unit file name -> text: gtm-dns-NAME.service (`gtm serve --control ... --redis ...`) and/or gtm-api-NAME.service (`gtm api`)"
  value       = local.units
}

output "dns_command" {
  value = local.dns_command
}

output "api_command" {
  value = local.api_command
}

output "cloud_init" {
  description = "A cloud-init document: installs the package and the units, and starts them"
  value = "#cloud-config\n${yamlencode({
    users       = ["default", { name = var.user, system = true, shell = "/usr/sbin/nologin", homedir = "/var/lib/gtm" }]
    packages    = ["python3", "python3-venv"]
    write_files = [for name, text in local.units : { path = "/etc/systemd/system/${name}", permissions = "0644", content = text }]
    runcmd = concat(
      [["python3", "-m", "venv", var.install_dir], ["${var.install_dir}/bin/pip", "install", var.package],
      ["systemctl", "daemon-reload"]],
      [for name in keys(local.units) : ["systemctl", "enable", "--now", name]],
    )
  })}"
}
