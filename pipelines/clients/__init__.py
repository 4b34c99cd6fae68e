"""One client module per outside tool (Terraform, AWS, Postgres, hooks)."""
