provider "aws" {
  region = local.region

  # Credentials come from the portal (an assumed role in the target account).
  # Pinning the account id makes the provider refuse to touch any other account,
  # production included, should the credentials ever be wrong.
  allowed_account_ids = local.allowed_account_ids

  default_tags {
    tags = local.tags
  }
}
