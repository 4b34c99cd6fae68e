"""Route 53 records of cloned databases: their names, types and the upsert that waits."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal

from django.conf import settings

from pipelines.clients import aws
from pipelines.dbclone.endpoints import output_value
from pipelines.dbclone.parallel import LogFn
from pipelines.stages.base import StageContext, StageError

TTL = 60


def record_name(*, ctx: StageContext, entry: Mapping[str, Any]) -> str:
    """The full record name for ``dns``: a relative name gets the account's zone appended."""
    name = str(entry.get("dns") or "")
    if not name:
        return ""
    if name.endswith("."):
        return name.rstrip(".")
    zone = output_value(ctx=ctx, name="private_zone_name") or ctx.config.get("dns_zone") or ""
    zone = str(zone).rstrip(".")
    if zone and name != zone and not name.endswith("." + zone):
        return f"{name}.{zone}"
    return name


def record_type(host: str) -> Literal["A", "CNAME"]:
    """An A record for an IPv4 address, else a CNAME."""
    try:
        ipaddress.IPv4Address(host)
        return "A"
    except ValueError:
        return "CNAME"


def session_for(ctx: StageContext) -> aws.Session:
    """Route 53 in the account's own cloud account (its private zone), else the builder's."""
    if ctx.account.cloud_account_id:
        session, _ = aws.assume_role(
            account_id=ctx.account.cloud_account_id, session_name=f"portal-dns-{ctx.run_id}"
        )
        return session
    return aws.builder_session()


def upsert(
    *, ctx: StageContext, session: aws.Session, record: Mapping[str, Any], log: LogFn
) -> str:
    """Point ``record['dns']`` at ``record['host']`` and wait until Route 53 is in sync."""
    zone_id = output_value(ctx=ctx, name="private_zone_id")
    if not isinstance(zone_id, str) or not zone_id:
        raise StageError(
            f"{record['dns']}: the account has no Terraform output private_zone_id",
            retryable=False,
        )
    host = str(record["host"])
    kind = record_type(host)
    change = aws.upsert_record(
        session=session, zone_id=zone_id, name=str(record["dns"]), type=kind, value=host, ttl=TTL
    )
    log(f"DNS {record['dns']} {kind} -> {host} (change {change})")
    aws.wait_change_insync(
        session=session,
        change_id=change,
        timeout_s=float(settings.PORTAL_DNS_TIMEOUT_SECONDS),
        log=log,
        poll_s=min(5.0, float(settings.PORTAL_RDS_POLL_SECONDS)),
    )
    return change
