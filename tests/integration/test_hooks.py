"""Script hooks (pre_hooks / post_hooks) run by a real Celery worker.

The blueprints are the test ones under tests/fixtures/blueprints, copied into the
session's blueprints folder, which the worker reads: a test may edit a hook there.
"""

from __future__ import annotations

import base64
import time
import uuid

import pytest
from django.test import Client

from pipelines import services
from pipelines.models import LogLine, PipelineRun, RunStatus, StageRun, StageStatus
from tests.conftest import token_client
from tests.factories import AccountFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOOK_ENV = {
    "PATH",
    "HOME",
    "LANG",
    "ACCOUNT_NAME",
    "ACCOUNT_ID",
    "ACCOUNT_PURPOSE",
    "RUN_ID",
    "STAGE_ATTEMPT",
    "CONFIG_JSON",
    "TF_OUTPUTS_JSON",
    "HOOK_OUTPUTS",
}
# What /bin/sh itself adds to its environment.
SHELL_ADDED = {"PWD", "SHLVL", "_", "OLDPWD"}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _log(stage: StageRun) -> str:
    return "\n".join(LogLine.objects.filter(stage=stage).values_list("text", flat=True))


def _explain(run: PipelineRun) -> str:
    return f"{run.explanation}: " + str(
        [(s.kind, s.status, s.explanation) for s in run.stages.all()]
    )


def test_hooks_run_in_name_order_with_a_minimal_env_and_outputs_merge(
    celery_worker, wait_for_run
) -> None:
    name = _unique("hooks")
    account = AccountFactory(
        name=name,
        blueprint="hooks-demo",
        config={"color": "green"},
        outputs={"endpoint": {"value": "orders.db.internal", "sensitive": False, "type": "string"}},
    )
    run = wait_for_run(services.start_run(account, "provision").pk)

    assert run.status == RunStatus.SUCCEEDED, _explain(run)
    pre = run.stages.get(kind="pre_hooks")
    assert pre.outputs["hooks_ran"] == ["10-first.sh", "20-second.sh"]
    assert pre.outputs["first"] == "green"  # read from CONFIG_JSON
    assert pre.outputs["second"] == 2
    assert pre.outputs["shared"] == "from-second"  # the later hook wins a shared key
    env_names = set(pre.outputs["env_names"].split())
    assert env_names >= HOOK_ENV
    assert env_names - HOOK_ENV - SHELL_ADDED == set()  # nothing of the worker's environment
    log = _log(pre)
    assert f"[10-first.sh] first hook for {name} (qa), run {run.pk} attempt 1" in log
    assert "[20-second.sh] second hook" in log

    post = run.stages.get(kind="post_hooks")
    assert post.outputs["seen_endpoint"] == "orders.db.internal"  # from TF_OUTPUTS_JSON
    assert post.outputs["hooks_ran"] == ["10-outputs.sh"]
    assert "[10-outputs.sh] endpoint is orders.db.internal" in _log(post)


def test_a_failing_hook_shows_its_output_tail_and_a_retry_runs_the_fixed_hook(
    celery_worker, wait_for_run, blueprints_root
) -> None:
    script = blueprints_root / "hook-fails" / "hooks" / "pre" / "10-check.sh"
    original = script.read_text()
    account = AccountFactory(name=_unique("hookfail"), blueprint="hook-fails", config={})
    try:
        run = wait_for_run(services.start_run(account, "provision").pk)

        assert run.status == RunStatus.FAILED
        stage = run.stages.get()
        assert stage.status == StageStatus.FAILED
        assert stage.explanation == (
            "hook 10-check.sh exited with status 3: quota exceeded: 0 of 0 accounts left"
        )
        assert "quota exceeded" in run.explanation
        # The tail of the output, stderr included, kept with the failure and in the log.
        assert "checking the quota\nline two of the check\nquota exceeded" in stage.error
        assert "last lines of 10-check.sh:" in _log(stage)

        script.write_text(
            "#!/bin/sh\n"
            'echo "quota fixed, attempt $STAGE_ATTEMPT"\n'
            'echo \'{"quota": "ok"}\' > "$HOOK_OUTPUTS"\n'
        )
        services.retry_stage(stage)
        run = wait_for_run(run.pk)

        assert run.status == RunStatus.SUCCEEDED, _explain(run)
        stage.refresh_from_db()
        assert (stage.status, stage.attempt) == (StageStatus.SUCCEEDED, 2)
        assert stage.outputs["quota"] == "ok"
        assert "[10-check.sh] quota fixed, attempt 2" in _log(stage)
    finally:
        script.write_text(original)


def test_a_hook_slower_than_its_timeout_is_stopped_and_fails(celery_worker, wait_for_run) -> None:
    account = AccountFactory(name=_unique("hookslow"), blueprint="hook-timeout", config={})
    started = time.monotonic()
    run = wait_for_run(services.start_run(account, "provision").pk, timeout=60)
    took = time.monotonic() - started

    assert run.status == RunStatus.FAILED
    stage = run.stages.get()
    # hooks.timeout_minutes: 0.05 is 3 s; the script would sleep 60 s.
    assert stage.explanation == "hook 10-sleep.sh timed out after 0.05 minutes"
    assert took < 30
    assert "starting a long job" in stage.error
    log = _log(stage)
    assert "[10-sleep.sh] starting a long job" in log
    assert "never printed" not in log


ADMIN_TOKEN = "adm1n-tok3n-" + uuid.uuid4().hex


def _secret_forms() -> list[str]:
    basic = base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()
    return [ADMIN_TOKEN, ADMIN_TOKEN.upper(), basic]


def _account_with_a_sensitive_output(blueprint: str):  # type: ignore[no-untyped-def]
    return AccountFactory(
        name=_unique("hooksecret"),
        blueprint=blueprint,
        config={},
        outputs={
            "admin_token": {"value": ADMIN_TOKEN, "sensitive": True, "type": "string"},
            "endpoint": {"value": "orders.db.internal", "sensitive": False, "type": "string"},
        },
    )


def test_a_hook_that_copies_a_sensitive_output_publishes_only_redacted_text(
    celery_worker, wait_for_run
) -> None:
    account = _account_with_a_sensitive_output("hook-secrets")
    run = wait_for_run(services.start_run(account, "provision").pk)

    assert run.status == RunStatus.SUCCEEDED, _explain(run)
    post = run.stages.get(kind="post_hooks")
    assert post.outputs["saw_token"] is True  # the blueprint lets its hooks see it
    assert post.outputs["copied"] == "[redacted]"
    assert post.outputs["nested"] == {"list": ["x-[redacted]-y"]}
    assert post.outputs["upper"] == "[redacted]"
    assert "[redacted]" in post.outputs["basic"]
    response = token_client(account.owner).get(f"/api/v1/runs/{run.pk}/")
    assert response.status_code == 200
    shown = response.content.decode() + _log(post)
    assert "the token is [redacted]" in _log(post)
    # The pages, the admin and the worker's own log show it no more than the API.
    owner = Client()
    owner.force_login(account.owner)
    admin = Client()
    admin.force_login(UserFactory(username=_unique("staff"), is_staff=True, is_superuser=True))
    for client, url in (
        (owner, f"/runs/{run.pk}/"),
        (owner, f"/runs/{run.pk}/stages/{post.pk}/log/"),
        (admin, f"/admin/pipelines/stagerun/{post.pk}/change/"),
        (admin, f"/admin/pipelines/pipelinerun/{run.pk}/change/"),
        (admin, f"/admin/accounts_app/account/{account.pk}/change/"),
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        shown += page.content.decode()
    shown += celery_worker.log_path.read_text(errors="replace")
    for form in _secret_forms():
        assert form not in shown


def test_hooks_do_not_see_sensitive_outputs_unless_the_blueprint_says_so(
    celery_worker, wait_for_run
) -> None:
    account = _account_with_a_sensitive_output("hook-secrets-hidden")
    run = wait_for_run(services.start_run(account, "provision").pk)

    assert run.status == RunStatus.SUCCEEDED, _explain(run)
    post = run.stages.get(kind="post_hooks")
    assert post.outputs["saw_token"] is False
    assert post.outputs["endpoint"] == "orders.db.internal"
    assert post.outputs["copied"] == ""
