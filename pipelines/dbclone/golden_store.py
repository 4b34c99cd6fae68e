"""Which golden copy an account's database is copied from, and when one is (re)built.

One golden copy per production database (blueprint and service), recorded as a
``GoldenCopy``. A provision copies the newest ready one taken within the database's
``golden.max_age_hours``, a refresh-data one taken within ``refresh_max_age_hours``;
otherwise a new one is built first (one build at a time per database: concurrent
stages wait for it and then share it), and older ones are dropped once it is ready.
Celery beat rebuilds each one when half its maximum age has passed.

A golden copy is built for the blueprint's rules as they are: ``rules_digest`` covers
the source, target, masking rules and scrub files, so a change of any of them is never
served by a copy built under the old ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from pipelines.blueprints import Blueprint, BlueprintError, blueprint_names, load_blueprint
from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.clients.aws import AwsError
from pipelines.dbclone import golden, rds, rds_golden, scrub
from pipelines.dbclone.golden import GoldenRef
from pipelines.dbclone.logical import CloneError, LogicalCloneSpec
from pipelines.dbclone.rds_golden import GoldenSnapshot
from pipelines.models import GoldenCopy, GoldenStatus

logger = logging.getLogger(__name__)

BUILD_LOCK_TIMEOUT_S = 6 * 3600.0  # a build of a big database may take hours
ERROR_MAX = 2000


def rules_digest(*, blueprint: Blueprint, entry: Mapping[str, Any]) -> str:
    scrub_files = [
        [name, hashlib.sha256(blueprint.resolve_file(name).read_bytes()).hexdigest()]
        for name in entry.get("scrub_sql") or []
    ]
    basis = {
        "source": entry["source"],
        "target": entry["target"],
        "masking": entry.get("masking") or {},
        "masking_strict": bool(entry.get("masking_strict")),
        "scrub_sql": scrub_files,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def newest_ready(*, blueprint: str, service: str, digest: str) -> GoldenCopy | None:
    return (
        GoldenCopy.objects.filter(
            blueprint=blueprint, service=service, rules_digest=digest, status=GoldenStatus.READY
        )
        .order_by("-taken_at", "-pk")
        .first()
    )


def _age_hours(copy: GoldenCopy, now: datetime) -> float:
    assert copy.taken_at is not None  # ready copies have one
    return (now - copy.taken_at).total_seconds() / 3600


def ref(copy: GoldenCopy) -> GoldenRef:
    assert copy.database  # ready copies have one
    return GoldenRef(database=copy.database, role=copy.role, table_counts=dict(copy.table_counts))


def golden_for_clone(
    *,
    blueprint: Blueprint,
    entry: Mapping[str, Any],
    refresh: bool,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
) -> GoldenCopy:
    """The ready golden copy a clone is copied from, built first if none is fresh enough."""
    limits = entry["golden"]
    max_age = float(limits["refresh_max_age_hours" if refresh else "max_age_hours"])
    return build_unless_fresh(
        blueprint=blueprint, entry=entry, max_age_hours=max_age, log=log, add_secret=add_secret
    )


def build_unless_fresh(
    *,
    blueprint: Blueprint,
    entry: Mapping[str, Any],
    max_age_hours: float,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
) -> GoldenCopy:
    service = entry["service"]
    digest = rules_digest(blueprint=blueprint, entry=entry)
    current = newest_ready(blueprint=blueprint.name, service=service, digest=digest)
    if current is not None and _age_hours(current, timezone.now()) <= max_age_hours:
        log(f"golden copy {current.database}: {_age_hours(current, timezone.now()):.1f} h old")
        return current
    admin_url = pg.connection_url(entry["target"])
    lock = f"portal-golden-build:{blueprint.name}:{service}"
    with pg.connect(admin_url, autocommit=True) as holder:  # the lock lives as long as this
        log(f"golden copy of {blueprint.name}/{service}: none fresh enough, building one")
        if not pg.advisory_lock(
            conn=holder, key=lock, shared=False, timeout_s=BUILD_LOCK_TIMEOUT_S
        ):
            raise CloneError(f"another build of the golden copy of {service} takes too long")
        # Built by someone else while this waited?
        current = newest_ready(blueprint=blueprint.name, service=service, digest=digest)
        if current is not None and _age_hours(current, timezone.now()) <= max_age_hours:
            log(f"golden copy {current.database} was built meanwhile")
            return current
        made = _build(
            blueprint=blueprint, entry=entry, digest=digest, log=log, add_secret=add_secret
        )
        _retire_older(made=made, log=log)
        return made


def _build(
    *,
    blueprint: Blueprint,
    entry: Mapping[str, Any],
    digest: str,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
) -> GoldenCopy:
    service, target = entry["service"], entry["target"]
    admin_url = pg.connection_url(target)
    # Builds that never finished (a killed worker): nobody else builds now (the lock).
    for stale in GoldenCopy.objects.filter(
        blueprint=blueprint.name, service=service, status=GoldenStatus.BUILDING
    ):
        if stale.database:
            golden.drop_golden(url=admin_url, database=stale.database, role=stale.role)
        stale.status, stale.error = GoldenStatus.FAILED, "abandoned: its build did not finish"
        stale.save(update_fields=["status", "error"])
    row = GoldenCopy.objects.create(
        blueprint=blueprint.name, service=service, target=target, rules_digest=digest
    )
    row.database = golden.golden_database_name(
        blueprint=blueprint.name, service=service, build=row.pk
    )
    row.role = row.database + "_owner"
    row.save(update_fields=["database", "role"])
    spec = LogicalCloneSpec(
        source=entry["source"],
        target=target,
        masking=dict(entry.get("masking") or {}),
        masking_strict=bool(entry.get("masking_strict")),
        jobs=int(entry.get("jobs", 2)),
    )
    files = list(entry.get("scrub_sql") or [])
    try:
        made = golden.build_golden(
            spec=spec,
            blueprint=blueprint.name,
            service=service,
            build=row.pk,
            log=log,
            add_secret=add_secret,
            scrub=lambda url: scrub.run_scrub(blueprint=blueprint, files=files, url=url, log=log),
        )
    except Exception as exc:
        row.status, row.error = GoldenStatus.FAILED, str(exc)[:ERROR_MAX]
        row.save(update_fields=["status", "error"])
        raise
    row.status, row.taken_at, row.ready_at = GoldenStatus.READY, made.taken_at, timezone.now()
    row.table_counts = made.table_counts
    row.save(update_fields=["status", "taken_at", "ready_at", "table_counts"])
    return row


def _retire_older(*, made: GoldenCopy, log: Callable[[str], None]) -> None:
    admin_url = pg.connection_url(made.target)
    older = GoldenCopy.objects.filter(
        blueprint=made.blueprint, service=made.service, status=GoldenStatus.READY
    ).exclude(pk=made.pk)
    for copy in older:
        assert copy.database
        try:
            golden.drop_golden(url=admin_url, database=copy.database, role=copy.role)
        except CloneError as exc:  # kept ready: the next build tries again
            log(f"golden copy {copy.database} not dropped yet: {exc}")
            continue
        copy.status = GoldenStatus.RETIRED
        copy.save(update_fields=["status"])
        log(f"golden copy {copy.database} replaced by {made.database} and dropped")


def _logger_for(where: str) -> Callable[[str], None]:
    def log(line: str) -> None:
        logger.info("%s: %s", where, line)

    return log


def refresh_due(*, now: datetime | None = None) -> list[GoldenCopy]:
    """The scheduled rebuild: every golden database whose newest copy is older than half
    its ``max_age_hours`` (or that has none) gets a new one. Failures are logged and
    the others go on; returns the copies built."""
    now = now or timezone.now()
    built = []
    for name in blueprint_names():
        try:
            blueprint = load_blueprint(name)
        except BlueprintError as exc:  # one broken blueprint does not stop the others
            logger.warning("golden copies of blueprint %s: %s", name, exc)
            continue
        for entry in blueprint.databases:
            if not entry.get("golden"):
                continue
            half = timedelta(hours=float(entry["golden"]["max_age_hours"]) / 2)
            digest = rules_digest(blueprint=blueprint, entry=entry)
            current = newest_ready(
                blueprint=blueprint.name, service=entry["service"], digest=digest
            )
            if current is not None and current.taken_at and now - current.taken_at < half:
                continue
            where = f"golden copy of {blueprint.name}/{entry['service']}"
            try:
                built.append(
                    build_unless_fresh(
                        blueprint=blueprint,
                        entry=entry,
                        max_age_hours=half.total_seconds() / 3600,
                        log=_logger_for(where),
                        add_secret=lambda _: None,  # the golden role's password is discarded
                    )
                )
            except (CloneError, pg.PostgresError) as exc:
                logger.warning("%s failed: %s", where, exc)
    return built


# --- RDS: masked golden snapshots in the data-preparation account --------------------------


def prep_target(*, region: str) -> rds.TargetSpec:
    """Where RDS golden snapshots are prepared: ``PORTAL_RDS_PREP_*`` (the account
    defaults to the builder's own)."""
    if not settings.PORTAL_RDS_PREP_SUBNET_GROUP:
        raise AwsError(
            "golden RDS snapshots need PORTAL_RDS_PREP_SUBNET_GROUP: the subnet group of "
            "the data-preparation account that production is restored into",
            retryable=False,
        )
    return rds.TargetSpec(
        account_id=settings.PORTAL_RDS_PREP_ACCOUNT_ID or aws.builder_account_id(),
        subnet_group_name=settings.PORTAL_RDS_PREP_SUBNET_GROUP,
        security_group_ids=tuple(settings.PORTAL_RDS_PREP_SECURITY_GROUP_IDS),
        region=region,
    )


def rds_rules_digest(
    *, blueprint: Blueprint, entry: Mapping[str, Any], source: rds.SourceSpec, prep: str
) -> str:
    scrub_files = [
        [name, hashlib.sha256(blueprint.resolve_file(name).read_bytes()).hexdigest()]
        for name in entry.get("scrub_sql") or []
    ]
    basis = {
        "source": [source.account_id, source.region, source.instance_id],
        "automated": source.use_automated_snapshot,
        "prep": prep,
        "database": entry.get("database_name") or "postgres",
        "scrub_sql": scrub_files,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def golden_snapshot(copy: GoldenCopy, *, region: str, instance_id: str) -> GoldenSnapshot:
    assert copy.database  # ready copies have one
    return GoldenSnapshot(
        account_id=copy.target,
        region=region,
        snapshot_id=copy.database,
        snapshot_arn="",
        instance_id=instance_id,
    )


def rds_golden_for_clone(
    *,
    blueprint: Blueprint,
    entry: Mapping[str, Any],
    source: rds.SourceSpec,
    refresh: bool,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
) -> GoldenCopy:
    """The masked golden snapshot an RDS clone is made from, built first if none is fresh
    enough. An unfinished build of the same source is resumed (every step of
    ``rds_golden`` looks before it creates), not started anew."""
    limits = entry["golden"]
    max_age = float(limits["refresh_max_age_hours" if refresh else "max_age_hours"])
    prep = prep_target(region=source.region)
    service = entry["service"]
    digest = rds_rules_digest(blueprint=blueprint, entry=entry, source=source, prep=prep.account_id)
    current = newest_ready(blueprint=blueprint.name, service=service, digest=digest)
    if current is not None and _age_hours(current, timezone.now()) <= max_age:
        log(f"golden snapshot {current.database}: {_age_hours(current, timezone.now()):.1f} h old")
        return current
    row = (
        GoldenCopy.objects.filter(
            blueprint=blueprint.name,
            service=service,
            rules_digest=digest,
            status=GoldenStatus.BUILDING,
        )
        .order_by("-pk")
        .first()
    )
    if row is None:
        row = GoldenCopy.objects.create(
            blueprint=blueprint.name,
            service=service,
            target=prep.account_id,
            rules_digest=digest,
            taken_at=timezone.now(),  # before production's snapshot: the age errs older
        )
    log(f"golden snapshot of {blueprint.name}/{service}: building #{row.pk} in {prep.account_id}")
    database = str(entry.get("database_name") or "postgres")
    files = list(entry.get("scrub_sql") or [])

    def scrub_prepared(clone: rds.CloneResult) -> list[str]:
        url = scrub.rds_clone_url(
            cloud_account_id=prep.account_id,
            run_id=row.pk,
            clone=clone,
            database=database,
            add_secret=add_secret,
            resolver=scrub.endpoint_resolver(),
        )
        return scrub.run_scrub(blueprint=blueprint, files=files, url=url, log=log)

    try:
        made = rds_golden.build_golden_snapshot(
            source=source,
            prep=prep,
            build=row.pk,
            scrub=scrub_prepared,
            log=log,
            add_secret=add_secret,
            timeout_s=float(entry.get("timeout_minutes", 240)) * 60,
            poll_s=float(settings.PORTAL_RDS_POLL_SECONDS),
        )
    except (AwsError, pg.PostgresError) as exc:
        row.error = str(exc)[:ERROR_MAX]  # still building: the next attempt resumes it
        row.save(update_fields=["error"])
        raise
    row.status, row.database, row.ready_at = GoldenStatus.READY, made.snapshot_id, timezone.now()
    row.save(update_fields=["status", "database", "ready_at"])
    for old in GoldenCopy.objects.filter(
        blueprint=blueprint.name, service=service, status=GoldenStatus.READY
    ).exclude(pk=row.pk):
        rds_golden.delete_golden_snapshot(
            golden=golden_snapshot(old, region=source.region, instance_id=source.instance_id),
            log=log,
        )
        old.status = GoldenStatus.RETIRED
        old.save(update_fields=["status"])
    return row
