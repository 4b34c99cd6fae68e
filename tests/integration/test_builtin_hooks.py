"""Built-in hooks aws.create_account and aws.assume_role against a real moto server.

Once through the real Celery worker (which must talk to the same moto server: see
``aws_worker``), and once by calling the hooks stage directly with a hand-built
StageContext, each run twice to show they are idempotent.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from pipelines import services
from pipelines.blueprints import load_blueprint
from pipelines.clients import aws
from pipelines.models import LogLine, PipelineRun, RunKind, RunStatus
from pipelines.stages import hooks
from pipelines.stages.base import AccountInfo, StageContext, StageError
from tests.factories import AccountFactory

pytestmark = pytest.mark.integration

# What the moto fixture sets or removes in this process's environment.
AWS_SET = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
AWS_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "MOTO_ACCOUNT_ID")
ACCOUNT_ID = re.compile(r"^\d{12}$")


@pytest.fixture
def aws_worker(moto_server: str, celery_worker: Any) -> Any:
    """The session's worker, restarted with this moto server's AWS environment if needed.

    The worker is its own process with the environment it was started with; when an
    earlier test started it before moto ran, it does not know the endpoint yet.
    """
    wanted = {name: os.environ[name] for name in AWS_SET if name in os.environ}
    assert wanted["AWS_ENDPOINT_URL"] == moto_server
    stale = any(celery_worker.env.get(k) != v for k, v in wanted.items()) or any(
        name in celery_worker.env for name in AWS_UNSET
    )
    if stale:
        celery_worker.stop()
        celery_worker.env.update(wanted)
        for name in AWS_UNSET:
            celery_worker.env.pop(name, None)
        celery_worker.start()
    return celery_worker


def _org_accounts_with(email: str) -> list[dict[str, Any]]:
    org = aws.builder_session().organizations()
    found = []
    for page in org.get_paginator("list_accounts").paginate():
        found += [a for a in page["Accounts"] if a["Email"].lower() == email]
    return found


def _explain(run: PipelineRun) -> str:
    return f"{run.explanation}: " + str(
        [(s.kind, s.status, s.explanation) for s in run.stages.all()]
    )


@pytest.mark.django_db(transaction=True)
def test_create_account_and_assume_role_through_the_worker_twice(aws_worker, wait_for_run) -> None:
    name = f"aws-{uuid.uuid4().hex[:8]}"
    account = AccountFactory(name=name, blueprint="aws-account", config={})

    first = wait_for_run(services.start_run(account, RunKind.PROVISION).pk, timeout=90)

    assert first.status == RunStatus.SUCCEEDED, _explain(first)
    pre = first.stages.get(kind="pre_hooks")
    cloud_id = pre.outputs["cloud_account_id"]
    assert ACCOUNT_ID.match(cloud_id)
    assert pre.outputs["role_arn"] == f"arn:aws:iam::{cloud_id}:role/OrganizationAccountAccessRole"
    assert pre.outputs["hooks_ran"] == ["aws.create_account", "aws.assume_role"]
    account.refresh_from_db()
    assert account.cloud_account_id == cloud_id
    # A later stage (another task, maybe another machine) sees the recorded id.
    assert first.stages.get(kind="post_hooks").outputs["seen_account_id"] == cloud_id
    email = aws.account_email(account_name=name, email_domain=settings.PORTAL_AWS_EMAIL_DOMAIN)
    assert [a["Id"] for a in _org_accounts_with(email)] == [cloud_id]

    second = wait_for_run(services.start_run(account, RunKind.UPDATE).pk, timeout=90)

    assert second.status == RunStatus.SUCCEEDED, _explain(second)
    again = second.stages.get(kind="pre_hooks")
    assert again.outputs["cloud_account_id"] == cloud_id
    assert again.outputs["role_arn"] == pre.outputs["role_arn"]
    assert [a["Id"] for a in _org_accounts_with(email)] == [cloud_id]  # still one account
    log = "\n".join(LogLine.objects.filter(stage=again).values_list("text", flat=True))
    assert f"exists: {cloud_id}" in log
    assert "requesting a new AWS account" not in log


class _RecordingRecords:
    """Account records kept in a list: this test runs the stage with no account row."""

    def __init__(self, recorded: list[dict]) -> None:
        self.recorded = recorded

    def record(self, **values: Any) -> None:
        self.recorded.append(values)

    def store_secret(self, *, name: str, value: str) -> None:
        raise AssertionError("the built-in hooks store no secret")

    def read_secret(self, name: str) -> str | None:
        return None

    def delete_secret(self, name: str) -> None:
        raise AssertionError("the built-in hooks delete no secret")

    def endpoints(self) -> dict[str, Any]:
        return {}

    def reference_resources(self, production: str) -> list[dict[str, Any]] | None:
        return None


class _NoArtifacts:
    def replace(self, *, prefix: str, files: Mapping[str, bytes]) -> dict[str, str]:
        raise AssertionError("hooks store no artifacts")

    def read(self, prefix: str) -> dict[str, bytes]:
        return {}

    def lay_out(self, *, prefix: str, directory: Path) -> list[Path]:
        return []


def _context(tmp_path: Path, name: str, blueprint: Any, recorded: list[dict]) -> StageContext:
    lines: list[str] = []
    return StageContext(
        account=AccountInfo(
            pk=1, name=name, purpose="qa", cloud_account_id="", config={}, outputs={}
        ),
        run_id=1,
        run_kind=RunKind.PROVISION,
        stage_id=1,
        stage_kind="pre_hooks",
        attempt=1,
        blueprint=blueprint,
        config={},
        previous={},
        workdir=tmp_path,
        log=lines.append,
        add_secret=lambda _: None,
        is_cancelled=lambda: False,
        artifacts=_NoArtifacts(),
        records=_RecordingRecords(recorded),
    )


def test_builtin_hooks_called_directly_are_idempotent(moto_server, tmp_path) -> None:
    blueprint = load_blueprint("aws-account")
    # Built-ins only: the folder's post script is not part of the pre_hooks stage anyway.
    name = f"direct-{uuid.uuid4().hex[:8]}"
    recorded: list[dict] = []

    first = hooks.execute(_context(tmp_path / "1", name, blueprint, recorded))
    second = hooks.execute(_context(tmp_path / "2", name, blueprint, recorded))

    assert ACCOUNT_ID.match(first["cloud_account_id"])
    assert second == first
    assert recorded == [{"cloud_account_id": first["cloud_account_id"]}] * 2
    assert (
        len(
            _org_accounts_with(
                aws.account_email(account_name=name, email_domain=settings.PORTAL_AWS_EMAIL_DOMAIN)
            )
        )
        == 1
    )


def test_assume_role_without_an_account_id_is_refused(moto_server, tmp_path) -> None:
    blueprint = load_blueprint("aws-account")
    only_assume = dataclasses.replace(
        blueprint, hooks=dataclasses.replace(blueprint.hooks, pre=("aws.assume_role",))
    )
    ctx = _context(tmp_path, "no-account-yet", only_assume, [])

    with pytest.raises(StageError) as failed:
        hooks.execute(ctx)

    assert "run aws.create_account first" in failed.value.explanation
    assert failed.value.retryable is False
