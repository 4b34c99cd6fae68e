data "aws_availability_zones" "available" {
  state = "available"
}

resource "aws_vpc" "main" {
  cidr_block           = local.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = local.account_name
  }
}

# One private subnet per availability zone, each a sixteenth of the VPC range.
resource "aws_subnet" "private" {
  count = local.availability_zones

  vpc_id            = aws_vpc.main.id
  availability_zone = data.aws_availability_zones.available.names[count.index]
  cidr_block        = cidrsubnet(local.cidr, 4, count.index)

  tags = {
    Name = "${local.account_name}-private-${data.aws_availability_zones.available.names[count.index]}"
    Tier = "private"
  }
}

resource "aws_route53_zone" "private" {
  name    = local.dns_zone
  comment = "Private zone of ${local.account_name}"

  # The dns_cutover stage adds records outside Terraform; a disposable account's
  # teardown deletes them with the zone.
  force_destroy = local.disposable

  vpc {
    vpc_id = aws_vpc.main.id
  }
}
