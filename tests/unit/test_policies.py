"""Policies (purposes, expiry, quota, auto-approval) and the role checks built on groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group

from accounts_app import permissions, policies, selectors
from accounts_app.models import AccountStatus
from pipelines.blueprints import Policy, load_blueprint
from tests.factories import AccountFactory, PipelineRunFactory, UserFactory

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEMO = Policy(auto_approve=("admins",), default_ttl_days=14, max_ttl_days=30, max_active_per_user=3)


def test_allowed_purposes_follow_the_policy_section() -> None:
    sandbox = load_blueprint("sandbox")
    assert policies.allowed_purposes(sandbox) == ["demo", "qa", "loadtest", "standby"]
    assert policies.purpose_error(blueprint=sandbox, purpose="qa") is None
    assert (
        policies.purpose_error(blueprint=sandbox, purpose="party")
        == "choose one of demo, qa, loadtest, standby"
    )
    # No policy section: every purpose is allowed.
    assert policies.allowed_purposes(load_blueprint("render-only")) == [
        "demo",
        "qa",
        "loadtest",
        "standby",
    ]


def test_a_purpose_without_a_policy_entry_is_refused() -> None:
    from dataclasses import replace

    demo_only = replace(load_blueprint("sandbox"), policy={"demo": DEMO})
    assert policies.allowed_purposes(demo_only) == ["demo"]
    assert policies.purpose_error(blueprint=demo_only, purpose="qa") == (
        "blueprint sandbox does not allow qa (allowed: demo)"
    )


def test_expiry_defaults_and_bounds() -> None:
    bounds = policies.expiry_bounds(policy=DEMO, now=NOW)
    assert bounds.default == NOW + timedelta(days=14)
    assert bounds.latest == NOW + timedelta(days=30)
    assert policies.expiry_bounds(policy=Policy(), now=NOW) == policies.ExpiryBounds(None, None)

    assert policies.resolve_expiry(policy=DEMO, purpose="demo", expires_at=None, now=NOW) == (
        NOW + timedelta(days=14),
        None,
    )
    assert policies.resolve_expiry(policy=Policy(), purpose="demo", expires_at=None, now=NOW) == (
        None,
        None,
    )
    exactly_max = NOW + timedelta(days=30)
    assert policies.resolve_expiry(
        policy=DEMO, purpose="demo", expires_at=exactly_max, now=NOW
    ) == (exactly_max, None)
    _, too_late = policies.resolve_expiry(
        policy=DEMO, purpose="demo", expires_at=exactly_max + timedelta(seconds=1), now=NOW
    )
    assert too_late == "at most 30 days from now for demo accounts"
    _, past = policies.resolve_expiry(policy=DEMO, purpose="demo", expires_at=NOW, now=NOW)
    assert past == "must be in the future"
    # No maximum: any future date.
    far = NOW + timedelta(days=5000)
    assert policies.resolve_expiry(policy=Policy(), purpose="qa", expires_at=far, now=NOW) == (
        far,
        None,
    )


def test_quota_message_has_the_numbers() -> None:
    assert policies.quota_error(DEMO, in_use=2, blueprint="sandbox", purpose="demo") is None
    assert policies.quota_error(DEMO, in_use=3, blueprint="sandbox", purpose="demo") == (
        "quota reached: 3 in use, limit 3 active demo accounts of sandbox per user"
    )
    assert policies.quota_error(Policy(), in_use=100, blueprint="sandbox", purpose="demo") is None


@pytest.mark.django_db
def test_active_count_leaves_out_rejected_and_torn_down_accounts() -> None:
    owner = UserFactory()
    for status in AccountStatus.values:
        AccountFactory(owner=owner, purpose="demo", status=status)
    AccountFactory(owner=owner, purpose="qa")
    AccountFactory(owner=owner, purpose="demo", blueprint="render-only")
    AccountFactory(purpose="demo")
    active = len(AccountStatus.values) - 2
    assert policies.active_count(owner_id=owner.pk, blueprint="sandbox", purpose="demo") == active


def test_auto_approving_groups() -> None:
    qa = Policy(auto_approve=("admins", "approvers"))
    assert policies.auto_approving_groups(policy=qa, roles={"approvers", "requesters"}) == [
        "approvers"
    ]
    assert policies.auto_approving_groups(policy=DEMO, roles={"approvers", "requesters"}) == []
    assert policies.auto_approving_groups(policy=Policy(), roles={"admins"}) == []


# --- roles -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("groups", "flags", "expected"),
    [
        ([], {}, (False, False, False)),
        (["requesters"], {}, (False, False, True)),
        (["approvers"], {}, (False, True, True)),
        (["admins"], {}, (True, True, True)),
        ([], {"is_staff": True}, (True, True, True)),
        ([], {"is_superuser": True}, (True, True, True)),
    ],
)
def test_roles_nest(groups: list[str], flags: dict[str, bool], expected: tuple[bool, ...]) -> None:
    user = UserFactory(roles=groups, **flags)
    assert (
        permissions.is_admin(user),
        permissions.is_approver(user),
        permissions.is_requester(user),
    ) == expected


def test_anonymous_has_no_role() -> None:
    anonymous = AnonymousUser()
    assert not permissions.is_requester(anonymous)
    assert permissions.group_names(anonymous) == frozenset()
    assert permissions.group_names(None) == frozenset()


@pytest.mark.django_db
def test_object_rules() -> None:
    sally = UserFactory(roles=["requesters"])
    otto = UserFactory(roles=["requesters"])
    april = UserFactory(roles=["approvers"])
    adam = UserFactory(roles=["admins"])
    account = AccountFactory(owner=sally)
    prod = AccountFactory(owner=sally, protected=True)
    run = PipelineRunFactory(account=account)

    # Who sees what is the selectors' question (one queryset for lists and single objects).
    assert selectors.visible_account(user=sally, account_id=account.pk) == account
    assert selectors.visible_account(user=otto, account_id=account.pk) is None
    assert selectors.visible_account(user=april, account_id=account.pk) == account
    assert selectors.visible_run(user=april, run_id=run.pk) == run
    assert selectors.visible_run(user=otto, run_id=run.pk) is None
    assert permissions.can_start_run(user=sally, account=account) and permissions.can_start_run(
        user=adam, account=account
    )
    assert not permissions.can_start_run(user=april, account=account)
    assert not permissions.can_start_run(user=sally, account=prod) and permissions.can_start_run(
        user=adam, account=prod
    )
    assert [permissions.can_retry(user=u, run=run) for u in (sally, april, adam)] == [
        False,
        False,
        True,
    ]
    assert [permissions.can_cancel(user=u, run=run) for u in (sally, april, adam)] == [
        False,
        False,
        True,
    ]
    assert [permissions.can_decide(u) for u in (sally, april, adam)] == [False, True, True]
    assert permissions.effective_roles(adam) >= {"admins", "approvers", "requesters"}
    assert permissions.roles_for_templates(april) == {
        "is_admin": False,
        "is_approver": True,
        "is_requester": True,
        "can_request": True,
        "can_decide": True,
    }


@pytest.mark.django_db
def test_group_names_are_loaded_once_per_user_object(django_assert_num_queries: Any) -> None:
    user = UserFactory(roles=["requesters"])
    accounts = [AccountFactory(owner=user) for _ in range(5)]
    with django_assert_num_queries(1):
        for account in accounts:
            permissions.is_owner(user=user, account=account)
            permissions.can_start_run(user=user, account=account)
            permissions.is_admin(user)
    # After a change of groups the cache is dropped on request.
    user.groups.add(Group.objects.get(name="admins"))
    assert not permissions.is_admin(user)
    permissions.forget_groups(user)
    assert permissions.is_admin(user)
