"""Route 53: an account's private zone and its records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.clients.aws.core import (
    LogFn,
    Session,
    aws_call,
    client_error_code,
    clock,
    fail,
    noop_log,
    sleep,
    translate_error,
    unless_missing,
)

if TYPE_CHECKING:
    from mypy_boto3_route53.literals import RRTypeType
    from mypy_boto3_route53.type_defs import (
        ChangeTypeDef,
        ResourceRecordSetOutputTypeDef,
        ResourceRecordSetTypeDef,
    )


_ZONE_MISSING = frozenset({"NoSuchHostedZone"})


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def private_zone_reference(*, account: str, zone: str) -> str:
    """The caller reference of the private zone the portal makes for ``account``: what
    tells our zone from other zones of the same name (Route 53 zones carry no tag)."""
    return f"portal:{account}:{zone.rstrip('.')}"


def find_private_zone(*, session: Session, name: str, caller_reference: str) -> str | None:
    """The id of the private hosted zone ``name`` made with ``caller_reference``, or None."""
    fqdn = _fqdn(name)
    with aws_call(f"looking up the private zone {name}"):
        listed = session.route53().list_hosted_zones_by_name(DNSName=fqdn, MaxItems="100")
    for zone in listed.get("HostedZones", []):
        if _fqdn(str(zone["Name"])) == fqdn and zone.get("CallerReference") == caller_reference:
            return str(zone["Id"])
    return None


def ensure_private_zone(
    *, session: Session, name: str, caller_reference: str, log: LogFn = noop_log
) -> str:
    """The id of the private hosted zone ``name`` made with ``caller_reference``, created
    once: Route 53 keeps several zones of one name (one per network), and the caller
    reference says which is ours, so the lookup comes first (a retry makes no second)."""
    found = find_private_zone(session=session, name=name, caller_reference=caller_reference)
    if found is not None:
        log(f"private zone {name} exists: {found}")
        return found
    with aws_call(f"creating the private zone {name}"):
        created = session.route53().create_hosted_zone(
            Name=_fqdn(name),
            CallerReference=caller_reference,
            HostedZoneConfig={"Comment": "made by the portal", "PrivateZone": True},
        )
    zone_id = str(created["HostedZone"]["Id"])
    log(f"private zone {name} created: {zone_id}")
    return zone_id


def zone_caller_reference(*, session: Session, zone_id: str) -> str | None:
    """The caller reference of hosted zone ``zone_id``, or None when it is gone."""
    zone = unless_missing(
        call=lambda: session.route53().get_hosted_zone(Id=zone_id),
        what=f"reading the hosted zone {zone_id}",
        missing=_ZONE_MISSING,
    )
    return None if zone is None else str(zone["HostedZone"].get("CallerReference", ""))


def zone_records(*, session: Session, zone_id: str, name: str) -> list[tuple[str, str]]:
    """(name, type) of every record set in zone ``name`` except its own SOA and NS
    records, which Route 53 made with the zone and removes with it."""
    with aws_call(f"listing the records of the zone {name}"):
        paginator = session.route53().get_paginator("list_resource_record_sets")
        pages = paginator.paginate(HostedZoneId=zone_id)
        records = [r for page in pages for r in page.get("ResourceRecordSets", [])]
    apex = _fqdn(name)
    return [
        (str(r["Name"]), str(r["Type"]))
        for r in records
        if not (_fqdn(str(r["Name"])) == apex and r["Type"] in ("SOA", "NS"))
    ]


def delete_zone(*, session: Session, zone_id: str) -> bool:
    """Delete an (empty) hosted zone; False when it was gone already."""
    deleted = unless_missing(
        call=lambda: session.route53().delete_hosted_zone(Id=zone_id),
        what=f"deleting the hosted zone {zone_id}",
        missing=_ZONE_MISSING,
    )
    return deleted is not None


def upsert_record(
    *,
    session: Session,
    zone_id: str,
    name: str,
    type: RRTypeType,
    value: str | Sequence[str],
    ttl: int = 300,
) -> str:
    """Create or replace a record set; return the Route 53 change id."""
    values = [value] if isinstance(value, str) else list(value)
    change: ChangeTypeDef = {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": _fqdn(name),
            "Type": type,
            "TTL": ttl,
            "ResourceRecords": [{"Value": v} for v in values],
        },
    }
    with aws_call(f"upserting DNS record {name} {type}"):
        resp = session.route53().change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Comment": "portal", "Changes": [change]}
        )
    return str(resp["ChangeInfo"]["Id"])


def wait_change_insync(
    *,
    session: Session,
    change_id: str,
    timeout_s: float = 300.0,
    log: LogFn = noop_log,
    poll_s: float = 5.0,
) -> None:
    """Wait until a Route 53 change is INSYNC."""
    client = session.route53()
    deadline = clock() + timeout_s
    while True:
        with aws_call(f"checking DNS change {change_id}"):
            status = str(client.get_change(Id=change_id)["ChangeInfo"]["Status"])
        if status == "INSYNC":
            log(f"DNS change {change_id} is in sync")
            return
        if clock() >= deadline:
            fail(
                f"DNS change {change_id} still {status} after {int(timeout_s)} s",
                retryable=True,
                code="Timeout",
            )
        log(f"DNS change {change_id}: {status}, waiting")
        sleep(poll_s)


def find_record(
    *, session: Session, zone_id: str, name: str, type: RRTypeType
) -> ResourceRecordSetOutputTypeDef | None:
    """The record set with exactly this name and type, or None."""
    fqdn = _fqdn(name)
    with aws_call(f"reading DNS record {name} {type}"):
        resp = session.route53().list_resource_record_sets(
            HostedZoneId=zone_id, StartRecordName=fqdn, StartRecordType=type, MaxItems="1"
        )
    for record in resp.get("ResourceRecordSets", []):
        if _fqdn(str(record["Name"])) == fqdn and record["Type"] == type:
            return record
    return None


def delete_record(*, session: Session, zone_id: str, name: str, type: RRTypeType) -> str | None:
    """Delete a record set; return the change id, or None when it did not exist."""
    found = find_record(session=session, zone_id=zone_id, name=name, type=type)
    if found is None:
        return None
    # The listed record, as a request value: the output type only differs in optionality.
    record: ResourceRecordSetTypeDef = {"Name": found["Name"], "Type": found["Type"]}
    if "TTL" in found:
        record["TTL"] = found["TTL"]
    if "ResourceRecords" in found:
        record["ResourceRecords"] = found["ResourceRecords"]
    try:
        resp = session.route53().change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": record}]},
        )
    except ClientError as exc:
        # Deleted by someone else between the read and the delete: same end state.
        if client_error_code(exc) == "InvalidChangeBatch" and "not found" in str(exc).lower():
            return None
        raise translate_error(exc=exc, what=f"deleting DNS record {name} {type}") from None
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=f"deleting DNS record {name} {type}") from None
    return str(resp["ChangeInfo"]["Id"])
