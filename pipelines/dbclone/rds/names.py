"""What an RDS clone is given and the names it creates: the source and target, and
every identifier, derived from (account, service, run) so that a retry finds what an
earlier attempt made."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DRIVER = "aws_rds_snapshot"

# RDS identifiers: 1-63 characters, a letter first, letters/digits/hyphens, no
# trailing hyphen and no two hyphens in a row. We also keep them lower case
# (RDS stores them lower case anyway).
RDS_ID_MAX = 63
_RDS_ID_RE = re.compile(r"[a-z](?:[a-z0-9]|-(?!-))*(?<!-)")
# Every snapshot an RDS clone creates starts with this.
SNAPSHOT_PREFIX = "portal-"
# "portal-" + stem + "-shared" is the longest name built from a stem.
_STEM_MAX = RDS_ID_MAX - len(SNAPSHOT_PREFIX) - len("-shared")

# Tag of a golden snapshot, set when it is made, after its instance was scrubbed.
GOLDEN_TAG = "portal:golden"
GOLDEN_MASKED = "masked"


@dataclass(frozen=True)
class SourceSpec:
    """The production database to clone."""

    account_id: str
    region: str
    instance_id: str
    use_automated_snapshot: bool = False
    role_name: str | None = None  # default: the portal's admin role
    # Clone this masked golden snapshot of the account (pipelines.dbclone.rds_golden)
    # instead of a snapshot of the instance: it must carry GOLDEN_TAG = GOLDEN_MASKED.
    golden_snapshot: str | None = None


@dataclass(frozen=True)
class TargetSpec:
    """Where the clone goes: values mostly from the target's Terraform outputs."""

    account_id: str
    subnet_group_name: str
    security_group_ids: tuple[str, ...] = ()
    role_name: str | None = None  # default: the portal's admin role
    region: str | None = None  # must be the source's region (None: the same)
    instance_class: str | None = None  # default: the snapshot's
    parameter_group_name: str | None = None
    multi_az: bool = False


@dataclass(frozen=True)
class CloneIds:
    """Every name the clone creates, all derived from (account, service, run)."""

    account: str
    service: str
    run_id: str
    source_snapshot: str  # manual snapshot of the source instance (source account)
    encrypted_copy: str  # copy encrypted with the share key, shared (source account)
    target_copy: str  # copy encrypted with the target's key (target account)
    instance: str  # the new instance (target account)
    kms_alias: str  # the target account's key for its copies
    secret_name: str  # master credentials (target account's Secrets Manager)

    def tags(self) -> dict[str, str]:
        return {
            "portal:account": self.account,
            "portal:service": self.service,
            "portal:run": self.run_id,
        }


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def is_valid_rds_identifier(value: str) -> bool:
    return len(value) <= RDS_ID_MAX and bool(_RDS_ID_RE.fullmatch(value))


def clone_identifiers(*, account: str, service: str, run_id: int | str) -> CloneIds:
    """Deterministic names for one clone; every RDS identifier is valid and <= 63 chars.

    Long account/service names are cut and a short hash of the full triple is
    appended, so two different triples never share names.
    """
    acct, svc, run = _slug(account) or "x", _slug(service) or "db", _slug(str(run_id)) or "0"
    stem = f"{acct}-{svc}-r{run}"
    if not stem[0].isalpha():
        stem = f"db-{stem}"
    if len(stem) > _STEM_MAX:
        digest = hashlib.sha256(f"{account}\0{service}\0{run_id}".encode()).hexdigest()[:8]
        tail = f"-r{run}-{digest}"
        if len(tail) > _STEM_MAX - 2:  # absurdly long run id: keep only the hash
            tail = f"-{digest}"
        head = f"{acct}-{svc}"
        if not head[0].isalpha():
            head = f"db-{head}"
        stem = head[: _STEM_MAX - len(tail)].rstrip("-") + tail
    ids = CloneIds(
        account=account,
        service=service,
        run_id=str(run_id),
        source_snapshot=f"{SNAPSHOT_PREFIX}{stem}-snap",
        encrypted_copy=f"{SNAPSHOT_PREFIX}{stem}-shared",
        target_copy=f"{SNAPSHOT_PREFIX}{stem}-copy",
        instance=stem,
        kms_alias=f"alias/portal-rds-{acct}",
        # Not ending in "-" + 6 characters: Secrets Manager would mistake it for
        # the random suffix of an ARN.
        secret_name=f"portal/{acct}/{svc}/r{run}/rds-master-credentials",
    )
    for name in (ids.source_snapshot, ids.encrypted_copy, ids.target_copy, ids.instance):
        assert is_valid_rds_identifier(name), name
    return ids


def share_key_alias(target_account_id: str) -> str:
    """Alias of the source-account key shared with ``target_account_id``."""
    return f"alias/portal-share-{target_account_id}"
