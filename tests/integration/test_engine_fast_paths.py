"""The engine's short paths: the one-statement claim, log lines written a burst at a time.

Each stage runs here in the test process (``engine.execute_stage``, as a worker's task
does), so the statements it sends can be counted. The stages are made queued with no
message, so that no worker of another test takes them."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.records import record_on_account
from pipelines import engine, outbox, rows
from pipelines.artifacts import DbArtifactStore
from pipelines.logs import StageLog
from pipelines.models import LogLine, PipelineRun, RunStatus, StageRun, StageStatus
from pipelines.outcomes import Failed
from pipelines.redaction import Redactor
from tests.factories import AccountFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _queued_stage(*, blueprint: str, kind: str) -> StageRun:
    account = AccountFactory(blueprint=blueprint, config={})
    run = PipelineRun.objects.create(account=account, kind="provision", status=RunStatus.RUNNING)
    return StageRun.objects.create(
        run=run,
        position=1,
        kind=kind,
        status=StageStatus.QUEUED,
        attempt=1,
        queued_at=timezone.now(),
    )


def _end(stage: StageRun) -> None:
    StageRun.objects.filter(pk=stage.pk).update(status=StageStatus.CANCELLED)
    PipelineRun.objects.filter(pk=stage.run_id).update(status=RunStatus.CANCELLED)


def _log_texts(stage: StageRun) -> list[str]:
    return list(
        LogLine.objects.filter(stage=stage).order_by("number").values_list("text", flat=True)
    )


def _log_inserts(queries: CaptureQueriesContext) -> int:
    table = LogLine._meta.db_table
    return sum(1 for query in queries.captured_queries if f"INSERT INTO {table}" in query["sql"])


def test_a_burst_of_output_is_written_in_few_inserts_every_line_in_order() -> None:
    stage = _queued_stage(blueprint="hook-chatty", kind="pre_hooks")
    run = stage.run

    with CaptureQueriesContext(connection) as queries:
        engine.execute_stage(stage.pk)

    stage.refresh_from_db()
    run.refresh_from_db()
    # The hook failed after its output: the stage fails, and none of its lines is lost.
    assert stage.status == StageStatus.FAILED
    assert run.status == RunStatus.FAILED
    texts = _log_texts(stage)
    printed = [text for text in texts if text.startswith("[10-chatty.sh] line ")]
    assert printed == [f"[10-chatty.sh] line {n}" for n in range(1, 301)]
    assert texts[0].startswith("--- pre_hooks, attempt 1, on ")
    assert texts[-1].startswith("--- pre_hooks failed: hook 10-chatty.sh exited with status 4")
    numbers = list(
        LogLine.objects.filter(stage=stage).order_by("number").values_list("number", flat=True)
    )
    assert numbers == list(range(1, len(numbers) + 1))
    # Three hundred lines and more, in a handful of statements.
    assert _log_inserts(queries) <= 10


def test_lines_kept_when_the_outcome_is_recorded_are_written_once_even_if_it_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage = _queued_stage(blueprint="hook-fails", kind="pre_hooks")
    claimed = rows.claim_queued(stage_id=stage.pk, worker=engine.this_worker(), now=stage.queued_at)
    assert claimed is not None
    log = StageLog(stage.pk, claimed.stage.attempt, Redactor(), last_number=claimed.last_log_number)
    log.hold()
    for n in range(1, 6):
        log(f"kept {n}")
    kept = log.take_held()
    decide = engine._decide
    calls = []

    def drop_the_connection_once(**kwargs: Any) -> None:
        decide(**kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine, "_decide", drop_the_connection_once)
    engine.retrying(
        lambda: engine._record_outcome(
            stage_id=stage.pk,
            attempt=claimed.stage.attempt,
            outcome=Failed(explanation="it broke"),
            log=log,
            kept=kept,
        ),
        what="the test's outcome",
    )

    assert len(calls) == 2
    texts = _log_texts(stage)
    assert texts[:5] == [f"kept {n}" for n in range(1, 6)]
    assert texts.count("--- pre_hooks failed: it broke ---") == 1
    stage.refresh_from_db()
    assert stage.status == StageStatus.FAILED
    _end(stage)


def test_the_one_statement_claim_refuses_a_stage_of_a_cancelled_run() -> None:
    stage = _queued_stage(blueprint="render-only", kind="render")
    run = stage.run
    # The cancel lands between the message and the claim (only the flag, as a cancel
    # that committed while the stage was being queued would leave it).
    PipelineRun.objects.filter(pk=run.pk).update(cancel_requested=True)

    assert rows.claim_queued(stage_id=stage.pk, worker="w:1", now=stage.queued_at) is None
    engine.execute_stage(stage.pk)  # the locked path then decides

    stage.refresh_from_db()
    run.refresh_from_db()
    assert stage.status == StageStatus.CANCELLED
    assert run.status == RunStatus.CANCELLED
    assert not LogLine.objects.filter(stage=stage, text__startswith="--- render, attempt").exists()


def test_the_one_statement_claim_takes_only_a_queued_stage() -> None:
    stage = _queued_stage(blueprint="render-only", kind="render")
    run = stage.run
    first = rows.claim_queued(stage_id=stage.pk, worker="w:1", now=stage.queued_at)

    assert first is not None
    assert (first.stage.status, first.stage.worker, first.stage.run.account.pk) == (
        StageStatus.RUNNING,
        "w:1",
        run.account_id,
    )
    assert first.previous == {}
    assert first.secret_ciphertexts == []
    # A second delivery finds it running: the locked path decides (a takeover or nothing).
    assert rows.claim_queued(stage_id=stage.pk, worker="w:2", now=stage.queued_at) is None
    assert first.stage.run.pk == run.pk
    _end(stage)


def test_a_stage_gets_the_outputs_of_the_earlier_stages_of_its_run() -> None:
    stage = _queued_stage(blueprint="render-only", kind="render")
    run = stage.run
    StageRun.objects.filter(pk=stage.pk).update(status=StageStatus.SUCCEEDED, outputs={"a": 1})
    later = StageRun.objects.create(
        run=run, position=stage.position + 1, kind="render", status=StageStatus.QUEUED
    )

    claimed = rows.claim_queued(stage_id=later.pk, worker="w:1", now=stage.queued_at)

    assert claimed is not None
    assert claimed.previous == {"render": {"a": 1}}
    _end(later)


def test_a_quick_stage_writes_its_lines_with_its_outcome_in_one_insert() -> None:
    # render-only has no hooks: its pre_hooks stage has nothing to run.
    stage = _queued_stage(blueprint="render-only", kind="pre_hooks")

    with CaptureQueriesContext(connection) as queries:
        engine.execute_stage(stage.pk)

    stage.refresh_from_db()
    assert stage.status == StageStatus.SUCCEEDED
    assert _log_texts(stage)[1:] == [
        "no pre-deploy hooks in blueprint render-only",
        "--- pre_hooks succeeded ---",
    ]
    assert _log_inserts(queries) == 1
    _end(stage)


def test_a_failed_render_writes_its_lines_with_its_outcome_in_one_insert() -> None:
    stage = _queued_stage(blueprint="render-only", kind="render")

    with CaptureQueriesContext(connection) as queries:
        engine.execute_stage(stage.pk)

    stage.refresh_from_db()
    texts = _log_texts(stage)
    assert texts[0].startswith("--- render, attempt 1, on ")
    assert texts[-1] == f"--- render failed: {stage.explanation} ---"
    assert _log_inserts(queries) == 1
    _end(stage)


def test_artifacts_not_stored_are_read_as_nothing_and_a_replace_keeps_only_its_files() -> None:
    stage = _queued_stage(blueprint="render-only", kind="render")
    store = DbArtifactStore(stage.run_id)
    assert store.read("plan/") == {}
    store.replace(
        prefix="plan/", files={"plan/plan.bin": b"\x00old", "plan/terraform.lock.hcl": b"lock"}
    )
    store.replace(prefix="terraform/", files={"terraform/main.tf": b"x"})
    digests = store.replace(prefix="plan/", files={"plan/plan.bin": b"\x00plan"})
    assert digests == {"plan/plan.bin": hashlib.sha256(b"\x00plan").hexdigest()}
    # The lock file of the earlier plan is gone; another prefix is left alone.
    assert store.read("plan/") == {"plan/plan.bin": b"\x00plan"}
    assert store.read("terraform/") == {"terraform/main.tf": b"x"}
    with pytest.raises(ValueError, match="not under"):
        store.replace(prefix="plan/", files={"terraform/main.tf": b"y"})
    _end(stage)


def test_a_copy_of_another_runs_artifacts_is_theirs_exactly_under_the_prefix() -> None:
    applied = _queued_stage(blueprint="render-only", kind="render")
    _end(applied)
    check = _queued_stage(blueprint="render-only", kind="render")
    DbArtifactStore(applied.run_id).replace(
        prefix="terraform/", files={"terraform/main.tf": b"applied", "terraform/vars.tf": b"v"}
    )
    store = DbArtifactStore(check.run_id)
    store.replace(
        prefix="terraform/", files={"terraform/stale.tf": b"x", "terraform/main.tf": b"y"}
    )
    store.replace(prefix="plan/", files={"plan/plan.bin": b"\x00"})

    assert store.copy_from(run_id=applied.run_id, prefix="terraform/") == 2
    assert store.read("terraform/") == {"terraform/main.tf": b"applied", "terraform/vars.tf": b"v"}
    assert store.read("plan/") == {"plan/plan.bin": b"\x00"}  # another prefix is left alone
    assert store.copy_from(run_id=applied.run_id, prefix="terraform/") == 2  # again: the same
    assert store.read("terraform/") == DbArtifactStore(applied.run_id).read("terraform/")
    _end(check)


def test_marking_a_message_sent_turns_off_the_wait_for_the_disk_in_its_transaction_only() -> None:
    with transaction.atomic():
        outbox.send_after_commit("pipelines.tasks.reap")
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(id) FROM pipelines_outboxmessage")
            (message_id,) = cursor.fetchone()
            assert outbox._mark_sent(message_id) == ("pipelines.tasks.reap", [])
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("off",)
        transaction.set_rollback(True)  # the test's message is never sent
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


def test_recording_outputs_is_one_statement_and_keeps_production_protected() -> None:
    clone = AccountFactory(config={})
    production = AccountFactory(config={}, purpose=Purpose.PRODUCTION)
    # Written around Account.save, which would protect it: as an old row might be.
    Account.objects.filter(pk=production.pk).update(protected=False)
    outputs = {"vpc": {"value": "10.0.0.0/16", "sensitive": False, "type": "string"}}

    with CaptureQueriesContext(connection) as queries:
        record_on_account(clone.pk, outputs=outputs, resources=[{"address": "a"}])
    record_on_account(production.pk, status=AccountStatus.READY)

    assert len(queries.captured_queries) == 1
    clone.refresh_from_db()
    production.refresh_from_db()
    assert (clone.outputs, clone.resources, clone.protected) == (outputs, [{"address": "a"}], False)
    assert (production.status, production.protected) == (AccountStatus.READY, True)
    with pytest.raises(Account.DoesNotExist):
        record_on_account(production.pk + 1000, status=AccountStatus.READY)
