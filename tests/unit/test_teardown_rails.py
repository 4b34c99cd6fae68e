"""The teardown rails that judge what AWS says of the assumed role's account."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.clients.aws import OrgAccount
from pipelines.teardown_rails import RailRefused, Subject, check_live

SUBJECT = Subject(name="acme-qa", purpose="qa", protected=False, cloud_account_id="111111111111")


def org(name: str, *, tagged_for: str = "") -> OrgAccount:
    tags = {"portal:account": tagged_for} if tagged_for else {}
    return OrgAccount(id=SUBJECT.cloud_account_id, name=name, status="ACTIVE", tags=tags)


def check(settings: Any, **facts: Any) -> list[str]:
    lines: list[str] = []
    values = {"live_account_id": SUBJECT.cloud_account_id, "aliases": [], "org_account": None}
    check_live(subject=SUBJECT, log=lines.append, **{**values, **facts})
    return lines


def test_the_live_id_is_checked_not_only_the_one_on_record(settings: Any) -> None:
    settings.PORTAL_TEARDOWN_BLOCKLIST = ("222222222222",)
    with pytest.raises(RailRefused, match="acts in cloud account 222222222222: blocklisted"):
        check(settings, live_account_id="222222222222")
    with pytest.raises(RailRefused, match="not 111111111111 on record"):
        check(settings, live_account_id="333333333333")


@pytest.mark.parametrize(
    "facts",
    [
        {"aliases": ["acme-production"]},
        {"org_account": org("Prod payments")},
        {"org_account": org("prod-copy", tagged_for="someone-else")},
    ],
)
def test_a_prod_name_the_portal_did_not_give_is_refused(settings: Any, facts: Any) -> None:
    settings.PORTAL_TEARDOWN_BLOCKLIST = ()
    with pytest.raises(RailRefused, match="contains 'prod'"):
        check(settings, **facts)


def test_a_prod_name_the_portal_gave_passes_and_every_rail_is_logged(settings: Any) -> None:
    settings.PORTAL_TEARDOWN_BLOCKLIST = ("222222222222",)
    lines = check(settings, org_account=org("acme-prodlike", tagged_for="acme-qa"))
    assert len(lines) == 2 and all(line.startswith("rail passed:") for line in lines)
