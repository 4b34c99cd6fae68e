"""The portal's roles, as Django groups."""

REQUESTERS = "requesters"
APPROVERS = "approvers"
ADMINS = "admins"
ROLES = (REQUESTERS, APPROVERS, ADMINS)
