"""Endpoint records: what ``Account.endpoints[service]`` holds for a database clone.

A record says where the service's database is reached now, and everything needed
to delete that clone later (driver, host, database, role, connection name, or
instance id, accounts, region, secret ARN). It never holds a password: logical
clones keep theirs in the portal's encrypted secrets (``db/<service>/<database>``),
RDS clones in the target account's Secrets Manager (only the ARN is recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.dbclone import logical, rds
from pipelines.stages.base import StageContext

LOGICAL = logical.DRIVER
RDS = rds.DRIVER
CLONE_DRIVERS = (LOGICAL, RDS)
# Keys of an endpoint record that identify one clone (a retry must not delete it).
IDENTITY_KEYS = ("driver", "host", "database", "role", "instance_id", "account_id")

# A record as stored on the account: JSON.
EndpointRecord = dict[str, Any]


def secret_name(*, service: str, database: str) -> str:
    """Name of a logical clone's role password among the account's encrypted secrets."""
    return f"db/{service}/{database}"


def output_value(*, ctx: StageContext, name: str) -> object:
    """A Terraform output of the account (as recorded by apply), or None."""
    output = ctx.account.outputs.get(name)
    return output.get("value") if isinstance(output, Mapping) else None


def same_clone(*, recorded: Mapping[str, Any] | None, clone: Mapping[str, Any] | None) -> bool:
    """True when both records describe the same clone (not merely the same service)."""
    if not recorded or not clone:
        return False
    return all(recorded.get(key) == clone.get(key) for key in IDENTITY_KEYS)


def without_previous(record: Mapping[str, Any]) -> EndpointRecord:
    return {key: value for key, value in record.items() if key != "previous"}


def describe(record: Mapping[str, Any]) -> str:
    """The clone in a few words, for logs and outputs."""
    where = f"{record.get('host')}:{record.get('port')}"
    if record.get("driver") == RDS:
        return f"RDS instance {record.get('instance_id')} ({where})"
    return f"database {record.get('database')} on {where}"
