"""The safety rails of a teardown (after aws-nuke's), each checked and logged.

``check_offline`` runs before any AWS call is made (by the request workflow when a
teardown is asked for, and again by the run's first stage): a protected or production
account, real AWS with no blocklist of production's cloud account ids, a recorded cloud
account id on that blocklist, or a name containing ``prod`` that the portal did not give
are refused. ``check_live`` runs once the account's role is assumed, before anything is
listed or deleted: the live id from STS GetCallerIdentity must not be on the blocklist
(not only the id on record), and an IAM alias or Organizations name containing ``prod``
is refused unless the portal created that cloud account (its ``portal:account`` tag).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings

from pipelines.blueprints import Blueprint
from pipelines.clients.aws import AwsSettings, OrgAccount
from pipelines.dbclone.rds import DRIVER as RDS_DRIVER
from portal.errors import PortalError

LogFn = Callable[[str], None]
PRODUCTION = "production"
_PROD = re.compile(r"prod", re.IGNORECASE)
_ACCOUNT_ID = re.compile(r"[0-9]{12}")


class RailRefused(PortalError):
    """A safety rail refused the teardown; the message names the rail."""

    def __init__(self, message: str) -> None:
        super().__init__(f"teardown refused: {message}", retryable=False)


@dataclass(frozen=True)
class Subject:
    """What the rails need to know about the account to tear down."""

    name: str
    purpose: str
    protected: bool
    cloud_account_id: str
    # Whether the teardown calls AWS at all (a cloud account, or RDS clones' sources).
    uses_aws: bool = True


def uses_aws(*, cloud_account_id: str, blueprint: Blueprint) -> bool:
    return bool(cloud_account_id) or any(
        entry.get("driver") == RDS_DRIVER for entry in blueprint.databases
    )


def blocklist() -> frozenset[str]:
    """PORTAL_TEARDOWN_BLOCKLIST, each a 12-digit cloud account id (RailRefused if not)."""
    ids = frozenset(str(i) for i in settings.PORTAL_TEARDOWN_BLOCKLIST)
    bad = sorted(i for i in ids if not _ACCOUNT_ID.fullmatch(i))
    if bad:
        raise RailRefused(
            f"PORTAL_TEARDOWN_BLOCKLIST holds {bad[0]!r}, not a 12-digit cloud account id"
        )
    return ids


def check_offline(subject: Subject, *, log: LogFn, aws_settings: AwsSettings) -> None:
    """Every rail that needs no AWS call; RailRefused at the first that fails."""
    if subject.protected or subject.purpose == PRODUCTION:
        raise RailRefused(f"account {subject.name} is protected (production is never torn down)")
    log(f"rail passed: {subject.name} is neither protected nor production")
    blocked = blocklist()
    if subject.uses_aws and not aws_settings.is_local and not blocked:
        raise RailRefused(
            "the portal talks to real AWS (no local AWS_ENDPOINT_URL) and "
            "PORTAL_TEARDOWN_BLOCKLIST is empty: list production's cloud account ids there"
        )
    if subject.uses_aws:
        log(f"rail passed: blocklist of {len(blocked)} cloud account id(s) in force")
    else:
        log("rail passed: no cloud account and no RDS source: this teardown calls no AWS")
    if subject.cloud_account_id in blocked:
        raise RailRefused(
            f"cloud account {subject.cloud_account_id} of {subject.name} is on the blocklist"
        )
    log(f"rail passed: recorded cloud account {subject.cloud_account_id or '(none)'} not blocked")


def check_live(
    *,
    subject: Subject,
    live_account_id: str,
    aliases: Sequence[str],
    org_account: OrgAccount | None,
    log: LogFn,
) -> None:
    """The rails on what AWS says of the assumed role's account; RailRefused if one fails."""
    if live_account_id in blocklist():
        raise RailRefused(f"the assumed role acts in cloud account {live_account_id}: blocklisted")
    if live_account_id != subject.cloud_account_id:
        raise RailRefused(
            f"the assumed role acts in cloud account {live_account_id}, "
            f"not {subject.cloud_account_id} on record"
        )
    log(f"rail passed: STS says the role acts in {live_account_id}, not blocklisted")
    made_by_portal = org_account is not None and org_account.tags.get("portal:account") == (
        subject.name
    )
    names = [*aliases, *([org_account.name] if org_account else [])]
    prod_names = [name for name in names if _PROD.search(name)]
    if prod_names and not made_by_portal:
        raise RailRefused(
            f"cloud account {live_account_id} is named {prod_names[0]!r} (contains 'prod') "
            "and the portal did not create it"
        )
    log(f"rail passed: cloud account names {names or '(none)'} (prod-named only if portal-made)")
