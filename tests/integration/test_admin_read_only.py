"""The admin shows what only the portal writes and changes none of it: only the engine
moves a run or a stage (a stage set to running by hand would have no worker behind it),
and only the approvals page and the API decide a request (four eyes)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from accounts_app.models import AccountStatus, RequestStatus
from pipelines.models import StageRun
from tests.factories import AccountRequestFactory, StageRunFactory, UserFactory

MODELS = (
    "pipelines_pipelinerun", "pipelines_stagerun", "pipelines_logline", "pipelines_artifact",
    "pipelines_goldencopy", "accounts_app_accountrequest", "accounts_app_accountsecret",
    "accounts_app_parityreport", "accounts_app_driftreport", "accounts_app_expiryreminder",
    "accounts_app_extensionrequest",
)  # fmt: skip


@pytest.mark.django_db
def test_runs_and_stages_are_shown_and_never_changed_in_the_admin() -> None:
    stage = StageRunFactory(status="failed", explanation="terraform apply failed")
    staff = Client()
    staff.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))

    for model in MODELS:
        assert staff.get(reverse(f"admin:{model}_changelist")).status_code == 200
        assert staff.get(reverse(f"admin:{model}_add")).status_code == 403, model
    page = staff.get(reverse("admin:pipelines_stagerun_change", args=[stage.pk]))
    assert page.status_code == 200 and b"terraform apply failed" in page.content
    run_page = staff.get(reverse("admin:pipelines_pipelinerun_change", args=[stage.run.pk]))
    assert run_page.status_code == 200
    edit = staff.post(
        reverse("admin:pipelines_stagerun_change", args=[stage.pk]),
        {"status": "running", "attempt": 1, "position": stage.position, "kind": "render"},
    )
    assert edit.status_code == 403
    gone = staff.post(reverse("admin:pipelines_pipelinerun_delete", args=[stage.run.pk]))
    assert gone.status_code == 403
    # Nor by deleting its account: an account with runs is torn down, its history kept.
    account = stage.run.account
    gone = staff.post(
        reverse("admin:accounts_app_account_delete", args=[account.pk]), {"post": "yes"}
    )
    assert gone.status_code == 403
    stage.refresh_from_db()
    assert stage.status == "failed"
    assert StageRun.objects.filter(pk=stage.pk).exists()


@pytest.mark.django_db
def test_a_request_cannot_be_approved_in_the_admin() -> None:
    """Four eyes: a superuser who asked for an account cannot approve it by editing the row."""
    staff = UserFactory(username="boss", is_staff=True, is_superuser=True)
    request = AccountRequestFactory(account__owner=staff, requested_by=staff)
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:accounts_app_accountrequest_change", args=[request.pk]))
    assert page.status_code == 200  # shown
    edit = client.post(
        reverse("admin:accounts_app_accountrequest_change", args=[request.pk]),
        {"status": RequestStatus.APPROVED, "decided_by": staff.pk},
    )
    assert edit.status_code == 403
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and request.decided_by is None


@pytest.mark.django_db
def test_an_account_status_cannot_be_set_in_the_admin() -> None:
    """Setting a requested account ready by hand would let a run start unapproved."""
    staff = UserFactory(username="chief", is_staff=True, is_superuser=True)
    request = AccountRequestFactory(account__owner=staff, requested_by=staff)
    account = request.account
    assert account.status == AccountStatus.REQUESTED
    client = Client()
    client.force_login(staff)
    edit = client.post(
        reverse("admin:accounts_app_account_change", args=[account.pk]),
        {
            "name": account.name, "blueprint": account.blueprint,
            "config": json.dumps(account.config), "purpose": account.purpose,
            "owner": staff.pk, "cloud_account_id": "", "status": AccountStatus.READY,
        },
    )  # fmt: skip
    assert edit.status_code == 302, edit.content.decode()[:2000]
    account.refresh_from_db()
    assert account.status == AccountStatus.REQUESTED
    answer = client.post(
        reverse("admin:accounts_app_account_changelist"),
        {"action": "provision", "_selected_action": [account.pk]},
        follow=True,
    )
    refused = f"{account.name}: account {account.name} waits for its request to be approved"
    assert refused in [str(m) for m in answer.context["messages"]]
    assert not account.runs.exists()
