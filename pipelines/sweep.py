"""The decommission sweep: what the portal made outside Terraform, found by the account's tag.

``find_tagged`` lists, in one cloud account, every RDS instance, manual RDS snapshot,
Secrets Manager secret and KMS key tagged ``portal:account=<name>`` (the tag every
clone resource carries, ``pipelines.dbclone.rds.CloneIds.tags``); the dry run of a
teardown lists them before anything is removed. ``delete_item`` removes one listed
item after reading its tag again: nothing without the account's tag is ever touched.
DNS records have no tags: the sweep deletes only the records the portal wrote itself,
as the account's endpoint records name them (``dns_records``), and the private zone the
``aws.private_zone`` hook made, known by its caller reference (``private_zones``), once
nothing but its own SOA and NS records is left in it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from accounts_app.models import Account
from pipelines.blueprints import Blueprint
from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.clients.aws import AwsError, Session, aws_call, error_code, translate_error
from pipelines.dbclone import dns, endpoints, logical, rds
from pipelines.teardown_rails import blocklist

ACCOUNT_TAG = "portal:account"
# ``Item.where`` of what lives in the builder's own account: the private zone (and its
# records) of an account that has no cloud account of its own.
BUILDER = "builder"
logger = logging.getLogger(__name__)
LogFn = Callable[[str], None]


class Kind(StrEnum):
    RDS_INSTANCE = "rds-instance"
    RDS_SNAPSHOT = "rds-snapshot"
    SECRET = "secret"  # noqa: S105 - a kind of resource, not a password
    KMS_KEY = "kms-key"
    DNS_RECORD = "dns-record"
    DNS_ZONE = "dns-zone"  # ``id`` the zone's id, ``zone`` its name
    PG_DATABASE = "pg-database"  # a postgres_logical clone: ``where`` is its connection


@dataclass(frozen=True)
class Item:
    """One thing the sweep removes; ``where`` is the cloud account id it lives in."""

    kind: str
    id: str
    where: str
    # DNS records: the hosted zone and the record type.
    zone: str = ""
    type: str = ""

    def describe(self) -> str:
        if self.kind == Kind.PG_DATABASE:
            return f"PostgreSQL clone database {self.id} (connection {self.where})"
        extra = f" {self.type} in zone {self.zone}" if self.kind == Kind.DNS_RECORD else ""
        if self.kind == Kind.DNS_ZONE:
            extra = f" ({self.zone})"
        where = "the builder's account" if self.where == BUILDER else f"account {self.where}"
        return f"{self.kind} {self.id}{extra} ({where})"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Item:
        return cls(
            **{key: str(data.get(key, "")) for key in ("kind", "id", "where", "zone", "type")}
        )


def _tagged(tags: Iterable[Mapping[str, Any]], *, name: str, key: str = "Key") -> bool:
    value = "Value" if key == "Key" else "TagValue"
    return any(t.get(key) == ACCOUNT_TAG and t.get(value) == name for t in tags)


def _rds_tags(session: Session, arn: str) -> list[Mapping[str, Any]]:
    with aws_call(f"reading the tags of {arn}"):
        return list(session.rds().list_tags_for_resource(ResourceName=arn).get("TagList", []))


def find_tagged(*, session: Session, where: str, name: str) -> list[Item]:
    """Everything in this cloud account tagged ``portal:account=<name>``."""
    found: list[Item] = []
    client = session.rds()
    with aws_call("listing RDS instances"):
        instances = [
            i for page in client.get_paginator("describe_db_instances").paginate()
            for i in page.get("DBInstances", [])
        ]  # fmt: skip
    for instance in instances:
        if _tagged(_rds_tags(session, str(instance["DBInstanceArn"])), name=name):
            found.append(Item(Kind.RDS_INSTANCE, str(instance["DBInstanceIdentifier"]), where))
    with aws_call("listing RDS snapshots"):
        snapshots = [
            s for page in client.get_paginator("describe_db_snapshots").paginate(
                SnapshotType="manual"
            ) for s in page.get("DBSnapshots", [])
        ]  # fmt: skip
    for snapshot in snapshots:
        if _tagged(_rds_tags(session, str(snapshot["DBSnapshotArn"])), name=name):
            found.append(Item(Kind.RDS_SNAPSHOT, str(snapshot["DBSnapshotIdentifier"]), where))
    with aws_call("listing secrets"):
        secrets = [
            s for page in session.secretsmanager().get_paginator("list_secrets").paginate()
            for s in page.get("SecretList", [])
        ]  # fmt: skip
    for secret in secrets:
        if not secret.get("DeletedDate") and _tagged(secret.get("Tags", []), name=name):
            found.append(Item(Kind.SECRET, str(secret["ARN"]), where))
    found.extend(Item(Kind.KMS_KEY, key, where) for key in _tagged_keys(session, name=name))
    return found


def _tagged_keys(session: Session, *, name: str) -> list[str]:
    kms = session.kms()
    with aws_call("listing KMS keys"):
        key_ids = [
            str(k["KeyId"]) for page in kms.get_paginator("list_keys").paginate()
            for k in page.get("Keys", [])
        ]  # fmt: skip
    tagged = []
    for key_id in key_ids:
        if _key_is_ours(session, key_id=key_id, name=name):
            tagged.append(key_id)
    return tagged


def _key_is_ours(session: Session, *, key_id: str, name: str) -> bool:
    kms = session.kms()
    try:
        tags = kms.list_resource_tags(KeyId=key_id).get("Tags", [])
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError:
        return False  # AWS-managed or inaccessible keys: not ours
    ours = _tagged(tags, name=name, key="TagKey")
    return ours and meta.get("KeyState") != "PendingDeletion"


def dns_records(*, endpoint_records: Mapping[str, Any], zone_id: object, where: str) -> list[Item]:
    """The DNS records the portal wrote for the account's databases (its endpoint records)."""
    if not isinstance(zone_id, str) or not zone_id:
        return []
    items = []
    for record in endpoint_records.values():
        for one in (record or {}, (record or {}).get("previous") or {}):
            if one.get("dns") and one.get("host"):
                kind = dns.record_type(str(one["host"]))
                items.append(Item(Kind.DNS_RECORD, str(one["dns"]), where, zone_id, kind))
    return sorted(set(items), key=lambda item: item.id)


def private_zones(*, session: Session, where: str, account: str, zone: str) -> list[Item]:
    """The private zone ``zone`` the ``aws.private_zone`` hook made for ``account``, if any."""
    if not zone:
        return []
    reference = aws.private_zone_reference(account=account, zone=zone)
    zone_id = aws.find_private_zone(session=session, name=zone, caller_reference=reference)
    return [] if zone_id is None else [Item(Kind.DNS_ZONE, zone_id, where, zone.rstrip("."))]


# What follows a clone's "<account>_<service>_" prefix: the short run id, nothing else (so
# account "demo" never matches a clone of account "demo-orders").
_RUN_SUFFIX = re.compile(r"[a-z0-9]{1,12}")


def find_logical_clones(*, blueprint: Blueprint, name: str) -> list[Item]:
    """Clone databases of the account's ``postgres_logical`` services on their target
    servers, recorded or not (a clone a crashed stage left): each owned by a role carrying
    the clone driver's marker for it, the PostgreSQL counterpart of a tag."""
    found = []
    for entry in blueprint.databases:
        if entry.get("driver") != logical.DRIVER:
            continue
        target = str(entry["target"])
        sample = logical.clone_database_name(
            account=name, service=str(entry["service"]), run_id="0"
        )
        prefix = sample[:-1]
        rows = pg.fetch_all(
            pg.connection_url(target),
            "SELECT d.datname, r.rolname, shobj_description(r.oid, 'pg_authid') "
            "FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
            "WHERE starts_with(d.datname, %s) ORDER BY 1",
            (prefix,),
        )
        for database, role, comment in rows:
            ours = comment == logical.ROLE_MARKER.format(database=database)
            if ours and _RUN_SUFFIX.fullmatch(database[len(prefix) :]):
                found.append(Item(Kind.PG_DATABASE, database, target, type=role))
    return found


def source_accounts(*, blueprint: Blueprint, config: Mapping[str, Any]) -> dict[str, str]:
    """The production accounts RDS clones snapshot from: cloud account id -> region."""
    found: dict[str, str] = {}
    for entry in blueprint.databases:
        if entry.get("driver") != rds.DRIVER:
            continue
        source = entry.get("source") or {}
        if "parameter" in source:
            source = config.get(str(source["parameter"])) or {}
        if isinstance(source, Mapping) and source.get("account_id"):
            found[str(source["account_id"])] = str(source.get("region") or "")
    return found


def clone_endpoints(records: Mapping[str, Any]) -> Mapping[str, Any]:
    return {s: r for s, r in records.items() if r and r.get("driver") in endpoints.CLONE_DRIVERS}


# --- deleting -----------------------------------------------------------------------------


def still_tagged(*, session: Session | None, item: Item, name: str) -> bool:
    """Whether the item still exists and still carries the account's tag (no session: a
    PostgreSQL clone, checked on its server)."""
    if item.kind == Kind.PG_DATABASE:
        rows = pg.fetch_all(
            pg.connection_url(item.where),
            "SELECT 1 FROM pg_database WHERE datname = %s",
            (item.id,),
        )
        return bool(rows)
    assert session is not None, "an AWS item needs its account's session"
    if item.kind == Kind.RDS_INSTANCE:
        instance = rds.describe_instance(rds=session.rds(), instance_id=item.id)
        if instance is None:
            return False
        return _tagged(_rds_tags(session, str(instance["DBInstanceArn"])), name=name)
    if item.kind == Kind.RDS_SNAPSHOT:
        snapshot = rds.describe_snapshot(rds=session.rds(), snapshot_id=item.id)
        if snapshot is None:
            return False
        return _tagged(_rds_tags(session, str(snapshot["DBSnapshotArn"])), name=name)
    if item.kind == Kind.SECRET:
        secret = aws.describe_secret(session=session, secret_id=item.id)
        if secret is None or secret.get("DeletedDate"):
            return False
        return _tagged(secret.get("Tags", []), name=name)
    if item.kind == Kind.KMS_KEY:
        return _key_is_ours(session, key_id=item.id, name=name)
    if item.kind == Kind.DNS_RECORD:
        found = aws.find_record(
            session=session, zone_id=item.zone, name=item.id, type=_record_type(item)
        )
        return found is not None
    if item.kind == Kind.DNS_ZONE:
        reference = aws.zone_caller_reference(session=session, zone_id=item.id)
        return reference == aws.private_zone_reference(account=name, zone=item.zone)
    return False


def _record_type(item: Item) -> Literal["A", "CNAME"]:
    return "A" if item.type == "A" else "CNAME"


def drop_logical_clone(*, item: Item, log: LogFn) -> bool:
    """Drop a listed PostgreSQL clone and its role (the driver checks its marker again)."""
    if not still_tagged(session=None, item=item, name=""):
        log(f"{item.describe()}: already gone")
        return False
    logical.drop_clone(url=pg.connection_url(item.where), database=item.id, role=item.type)
    log(f"dropped {item.describe()} and its role {item.type}")
    return True


def delete_item(*, session: Session, item: Item, name: str, log: LogFn) -> bool:
    """Delete one listed item if it still carries the tag; False when it was gone (or not ours)."""
    if not still_tagged(session=session, item=item, name=name):
        log(f"{item.describe()}: already gone")
        return False
    if item.kind == Kind.RDS_INSTANCE:
        with aws_call(f"deleting RDS instance {item.id}"):
            session.rds().delete_db_instance(
                DBInstanceIdentifier=item.id, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
            )
        _wait_instance_gone(session=session, instance_id=item.id, log=log)
    elif item.kind == Kind.RDS_SNAPSHOT:
        with aws_call(f"deleting RDS snapshot {item.id}"):
            session.rds().delete_db_snapshot(DBSnapshotIdentifier=item.id)
    elif item.kind == Kind.SECRET:
        aws.delete_secret(session=session, secret_id=item.id)
    elif item.kind == Kind.KMS_KEY:
        _retire_key(session=session, key_id=item.id, log=log)
    elif item.kind == Kind.DNS_RECORD:
        aws.delete_record(session=session, zone_id=item.zone, name=item.id, type=_record_type(item))
    elif item.kind == Kind.DNS_ZONE:
        # Only once the portal's records are gone: a record someone else put in the zone
        # (Terraform's, removed by the destroy that follows) is not the sweep's to delete.
        others = aws.zone_records(session=session, zone_id=item.id, name=item.zone)
        if others:
            listed = ", ".join(f"{record} {kind}" for record, kind in others[:5])
            log(f"{item.describe()} left in place: it still holds {len(others)} record(s) "
                f"the portal did not write ({listed})")  # fmt: skip
            return False
        if not aws.delete_zone(session=session, zone_id=item.id):
            log(f"{item.describe()}: already gone")
            return False
    log(f"deleted {item.describe()}")
    return True


def _wait_instance_gone(*, session: Session, instance_id: str, log: LogFn) -> None:
    """Terraform destroys the instance's network next: the instance must be gone first."""
    poll = float(settings.PORTAL_RDS_POLL_SECONDS)
    deadline = time.monotonic() + float(settings.PORTAL_RDS_TIMEOUT_SECONDS)
    while rds.describe_instance(rds=session.rds(), instance_id=instance_id) is not None:
        if time.monotonic() > deadline:
            raise AwsError(f"RDS instance {instance_id} is still deleting", retryable=True)
        log(f"RDS instance {instance_id} is deleting; waiting")
        time.sleep(poll)


def _retire_key(*, session: Session, key_id: str, log: LogFn) -> None:
    """Revoke the key's grants, drop its aliases, schedule its deletion (AWS's shortest wait)."""
    kms = session.kms()
    try:
        grants = kms.list_grants(KeyId=key_id).get("Grants", [])
        for grant in grants:
            kms.revoke_grant(KeyId=key_id, GrantId=str(grant["GrantId"]))
            log(f"revoked grant {grant['GrantId']} on KMS key {key_id}")
        aliases = kms.list_aliases(KeyId=key_id).get("Aliases", [])
        for alias in aliases:
            kms.delete_alias(AliasName=str(alias["AliasName"]))
            log(f"deleted KMS alias {alias['AliasName']}")
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    except ClientError as exc:
        if error_code(exc) == "NotFoundException":
            return
        raise translate_error(exc=exc, what=f"retiring KMS key {key_id}") from None
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=f"retiring KMS key {key_id}") from None


def close_pending_accounts() -> list[str]:
    """Close again the cloud accounts whose close AWS's quota refused; the names closed."""
    closed = []
    blocked = blocklist()
    for account in Account.objects.filter(close_pending=True).exclude(cloud_account_id=""):
        if account.cloud_account_id in blocked:
            continue  # never, whatever was recorded
        try:
            aws.close_account(account_id=account.cloud_account_id)
        except AwsError as exc:
            if exc.code != "ACCOUNT_ALREADY_CLOSED":
                logger.info("closing %s still refused: %s", account.name, exc.explanation)
                continue
        Account.objects.filter(pk=account.pk).update(close_pending=False)
        closed.append(account.name)
    return closed
