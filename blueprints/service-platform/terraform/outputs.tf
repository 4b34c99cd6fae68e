output "vpc_id" {
  value = aws_vpc.main.id
}

output "private_subnet_ids" {
  value = aws_subnet.private[*].id
}

output "private_zone_id" {
  value = aws_route53_zone.private.zone_id
}

output "db_subnet_group_name" {
  value = aws_db_subnet_group.main.name
}

output "db_security_group_ids" {
  description = "Service name -> security group of its database."
  value       = { for name, group in aws_security_group.db : name => group.id }
}

output "database_endpoints" {
  description = "Service name -> database host name."
  value       = { for name, instance in aws_db_instance.service : name => instance.address }
}

output "database_identifiers" {
  description = "Service name -> RDS instance identifier (the data clone stage restores into these)."
  value       = { for name, instance in aws_db_instance.service : name => instance.identifier }
}

output "database_master_secret_arns" {
  description = "Service name -> ARN of the Secrets Manager secret holding the master password."
  value       = { for name, instance in aws_db_instance.service : name => instance.master_user_secret[0].secret_arn }
}
