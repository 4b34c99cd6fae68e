# Built-in things only (terraform_data, the terraform provider): this blueprint
# plans and applies offline, with no provider download and no cloud account.
# No backend block: the portal writes the backend configuration itself.
terraform {
  required_version = ">= 1.5.0"
}
