# A machine of the global tier: a DNS node that follows the control plane
# (`gtm serve --control ... --redis ...`), the control-plane API (`gtm api`), or both.

variable "name" {
  type        = string
  description = "The node's name in `gtm status` (--node-id, and the units' names)"
}

variable "dns" {
  description = "The DNS node; null: none on this machine"
  type = object({
    listen  = list(string)
    workers = optional(number)
    nsid    = optional(string)
    probe   = optional(bool, true)
  })
  default = { listen = ["0.0.0.0:53", "[::]:53"] }
}

variable "api" {
  description = "The control-plane API; null: none on this machine"
  type = object({
    listen          = optional(string, "127.0.0.1:8080")
    secret_key_file = optional(string, "/etc/gtm/secret.key")
    tls_cert        = optional(string)
    tls_key         = optional(string)
  })
  default = null
}

variable "control" {
  description = "The store (postgresql://..., no password: put PGPASSWORD in /etc/gtm/node.env), Redis, namespace"
  type = object({
    store     = string
    redis     = optional(string)
    namespace = optional(string, "gtm")
  })
}

variable "install_dir" {
  type        = string
  default     = "/opt/gtm"
  description = "The virtual environment the package is installed into"
}

variable "package" {
  type        = string
  default     = "gtm"
  description = "What `pip install` installs: a requirement or a wheel's URL"
}

variable "user" {
  type    = string
  default = "gtm"
}
