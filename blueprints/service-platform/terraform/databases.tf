locals {
  database_services = { for name, service in local.services : name => service if service.database }

  # RDS identifiers: letters, digits and single hyphens, at most 63 characters.
  # Long names keep a hash suffix so that two services never collide.
  db_identifier_full = {
    for name in keys(local.database_services) :
    name => join("-", compact(split("-", replace(lower("${local.account_name}-${name}"), "_", "-"))))
  }
  db_identifiers = {
    for name, full in local.db_identifier_full :
    name => can(regex("^.{1,63}$", full)) ? full : "${trim(substr(full, 0, 54), "-")}-${substr(sha256(full), 0, 8)}"
  }
}

resource "aws_db_subnet_group" "main" {
  name        = "${local.account_name}-db"
  description = "Private subnets for the databases of ${local.account_name}"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_security_group" "db" {
  for_each = local.database_services

  # "db-" first: security group names may not start with "sg-".
  name        = "db-${local.db_identifiers[each.key]}"
  description = "PostgreSQL of ${each.key}, reachable from inside the VPC"
  vpc_id      = aws_vpc.main.id

  tags = {
    Name    = "db-${local.db_identifiers[each.key]}"
    Service = each.key
  }
}

resource "aws_vpc_security_group_ingress_rule" "db_postgres" {
  for_each = local.database_services

  security_group_id = aws_security_group.db[each.key].id
  description       = "PostgreSQL from the VPC"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
  cidr_ipv4         = aws_vpc.main.cidr_block
}

resource "aws_db_instance" "service" {
  for_each = local.database_services

  identifier        = local.db_identifiers[each.key]
  engine            = "postgres"
  engine_version    = "16"
  instance_class    = each.value.db_instance_class
  allocated_storage = each.value.db_storage_gb
  storage_type      = "gp3"
  storage_encrypted = true

  db_name  = each.key
  username = "portal_admin"
  # RDS generates the master password and keeps it in Secrets Manager: no
  # password ever sits in the config, the rendered files or the state.
  manage_master_user_password = true

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.db[each.key].id]
  publicly_accessible    = false

  deletion_protection = local.deletion_protection
  skip_final_snapshot = true
  apply_immediately   = local.disposable

  tags = {
    Service = each.key
  }
}
