# A region: where it is (registered in a zone's steering), its endpoints (for the zone's
# gtm_pool), and its balancers' configuration (lb.<name>, which they follow).

variable "name" {
  type        = string
  description = "The region's name: the zone's steering region and the control plane's lb.<name>"
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", var.name))
    error_message = "A region name is letters, digits, '-' and '_' (at most 63)."
  }
}

variable "zone" {
  type        = string
  description = "The zone whose steering gets this region (gtm_region)"
}

variable "latitude" {
  type = number
}

variable "longitude" {
  type = number
}

variable "country" {
  type        = string
  default     = null
  description = "Two-letter ISO 3166 code"
}

variable "continent" {
  type        = string
  default     = null
  description = "AF, AN, AS, EU, NA, OC or SA"
}

variable "endpoints" {
  description = "The region's public addresses (its balancers' listeners): put module.<x>.endpoints into the zone's gtm_pool"
  type = list(object({
    name          = string
    ipv4          = optional(string)
    ipv6          = optional(string)
    weight        = optional(number)
    capacity      = optional(number)
    check_address = optional(string)
  }))
  default = []
}

variable "pools" {
  description = "lb.<name>.pools: pool name -> backends (a set) and settings"
  type = map(object({
    backends = set(object({
      address = string
      weight  = optional(number)
      state   = optional(string)
    }))
    algorithm       = optional(string)
    slow_start      = optional(number)
    max_connections = optional(number)
    retries         = optional(number)
    check = optional(object({
      type     = string
      port     = optional(number)
      path     = optional(string)
      interval = optional(number)
      timeout  = optional(number)
      rise     = optional(number)
      fall     = optional(number)
    }))
  }))
}

variable "listeners" {
  description = "lb.<name>.listeners: listener name -> bind, pool, and the TLS settings"
  type = map(object({
    bind = string
    pool = string
    mode = optional(string)
    h2c  = optional(bool)
    tls = optional(object({
      certificates = optional(string)
      control      = optional(bool)
      default      = optional(string)
      min_version  = optional(string)
      alpn         = optional(list(string))
    }))
    routes = optional(list(object({
      pool        = string
      host        = optional(string)
      path_prefix = optional(string)
      header      = optional(string)
    })))
  }))
}

variable "control" {
  description = "The control plane the region's balancers follow: its store (postgresql://..., no password: put PGPASSWORD in /etc/gtm/lb.env), Redis for instant announcements, namespace"
  type = object({
    store     = string
    redis     = optional(string)
    namespace = optional(string, "gtm")
  })
}

variable "install_dir" {
  type        = string
  default     = "/opt/gtm"
  description = "The virtual environment the package is installed into (the unit runs <dir>/bin/gtm)"
}

variable "package" {
  type        = string
  default     = "gtm"
  description = "What `pip install` installs: a requirement or a wheel's URL"
}

variable "user" {
  type        = string
  default     = "gtm"
  description = "The system user the balancer runs as"
}

variable "admin_token_file" {
  type        = string
  default     = "/etc/gtm/lb-admin.token"
  description = "The balancer's admin API token, on its host (never in the shared document); cloud-init makes one when it is missing"
}
