output "vpc_cidr" {
  description = "The account's network range."
  value       = terraform_data.network.output.cidr
}

output "subnet_cidrs" {
  description = "The subnets carved out of the network range."
  value       = terraform_data.network.output.subnets
}

output "dns_zone" {
  description = "The private DNS zone services use to find each other."
  value       = terraform_data.dns_zone.output.name
}

output "services" {
  description = "Service names, in config order."
  value       = local.service_names
}

output "database_endpoints" {
  description = "Service name -> database host, for services with a database."
  value       = { for name, database in terraform_data.database : name => database.output.host }
}

output "admin_token" {
  description = "A demo secret (derived from the account name) to exercise hidden outputs."
  value       = sha256("${local.account_name}:admin")
  sensitive   = true
}
