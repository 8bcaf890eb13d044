terraform {
  required_version = ">= 1.11"
  required_providers {
    gtm = { source = "gtm/gtm" }
  }
}
