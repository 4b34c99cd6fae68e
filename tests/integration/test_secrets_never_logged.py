"""The clone roles' generated passwords never reach a log, an output, an API answer or a page.

Two refresh runs of an account with two logical databases (four generated
passwords), read back from the account's encrypted secrets; then every log line,
every stage's outputs and explanations, the account's recorded values, every API
answer and every page about the account and its runs are searched for them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from accounts_app.models import Account
from accounts_app.records import read_secret
from pipelines import services
from pipelines.models import LogLine, PipelineRun, RunKind, RunStatus, StageRun
from tests.factories import UserFactory
from tests.integration.conftest import CloneSource, explain
from tests.integration.test_db_clone_stage import make_account

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SERVICES = ("billing", "orders")


def stored_passwords(account: Account, run: PipelineRun) -> list[str]:
    outputs = run.stages.get(kind="db_clone").outputs["services"]
    passwords = [read_secret(account_id=account.pk, name=outputs[s]["secret"]) for s in SERVICES]
    assert all(p and len(p) >= 32 for p in passwords), "no generated password was stored"
    return [p for p in passwords if p]


def everything_shown(client: Client, account: Account, runs: list[PipelineRun]) -> dict[str, str]:
    """Every text the portal stores or shows about the account and its runs."""
    texts: dict[str, str] = {}
    stages = StageRun.objects.filter(run__in=runs)
    texts["log lines"] = "\n".join(
        LogLine.objects.filter(stage__in=stages).values_list("text", flat=True)
    )
    for stage in stages:
        texts[f"stage {stage.pk} outputs"] = json.dumps(stage.outputs)
        texts[f"stage {stage.pk} error"] = f"{stage.explanation}\n{stage.error}"
    account.refresh_from_db()
    texts["account values"] = json.dumps([account.outputs, account.endpoints, account.config])
    urls = [f"/api/v1/accounts/{account.pk}/", f"/accounts/{account.pk}/", "/api/v1/accounts/"]
    for run in runs:
        texts[f"run {run.pk} explanation"] = run.explanation
        urls += [f"/api/v1/runs/{run.pk}/", f"/runs/{run.pk}/"]
        for stage in run.stages.all():
            urls += [
                f"/api/v1/runs/{run.pk}/stages/{stage.pk}/log/",
                f"/runs/{run.pk}/stages/{stage.pk}/log/",
            ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        texts[url] = response.content.decode()
    return texts


def test_generated_passwords_never_shown(
    celery_worker, wait_for_run, clone_source: CloneSource, moto_server: str
) -> None:
    account, _, _ = make_account("logical-data", moto_server)
    first = wait_for_run(services.start_run(account, RunKind.REFRESH_DATA).pk, timeout=120)
    assert first.status == RunStatus.SUCCEEDED, explain(first)
    passwords = stored_passwords(account, first)  # before the next cutover deletes them
    second = wait_for_run(services.start_run(account, RunKind.REFRESH_DATA).pk, timeout=120)
    assert second.status == RunStatus.SUCCEEDED, explain(second)
    passwords += stored_passwords(account, second)
    assert len(set(passwords)) == 4

    client = Client()
    client.force_login(UserFactory(username=f"admin-{account.name}", roles=["admins"]))
    texts = everything_shown(client, account, [first, second])

    # Positive control: the search does see what the clone stages recorded.
    clone = second.stages.get(kind="db_clone").outputs["services"]["orders"]
    assert clone["database"] in texts[f"/api/v1/runs/{second.pk}/"]
    assert clone["database"] in texts[f"/api/v1/accounts/{account.pk}/"]
    assert clone["database"] in texts["log lines"]
    leaks: list[tuple[str, Any]] = [
        (where, index)
        for where, text in texts.items()
        for index, password in enumerate(passwords)
        if password in text
    ]
    assert leaks == []
    # Not even redacted: the passwords never reached the logger at all.
    assert "[redacted]" not in texts["log lines"]
