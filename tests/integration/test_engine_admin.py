"""The admin shows the engine's rows and changes none of them: only the engine moves a
run or a stage (a stage set to running by hand would have no worker behind it)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from pipelines.models import StageRun
from tests.factories import StageRunFactory, UserFactory

MODELS = ("pipelinerun", "stagerun", "logline", "artifact", "goldencopy")


@pytest.mark.django_db
def test_runs_and_stages_are_shown_and_never_changed_in_the_admin() -> None:
    stage = StageRunFactory(status="failed", explanation="terraform apply failed")
    staff = Client()
    staff.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))

    for model in MODELS:
        assert staff.get(reverse(f"admin:pipelines_{model}_changelist")).status_code == 200
        assert staff.get(reverse(f"admin:pipelines_{model}_add")).status_code == 403, model
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
