"""How an account gets built: runs, their stages, log lines and stored files."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts_app.models import Account


class RunKind(models.TextChoices):
    PROVISION = "provision", "Provision"
    UPDATE = "update", "Update"
    REFRESH_DATA = "refresh-data", "Refresh data"
    TEARDOWN = "teardown", "Teardown"
    DRIFT_CHECK = "drift-check", "Drift check"


class Trigger(models.TextChoices):
    USER = "user", "User"
    SCHEDULE = "schedule", "Schedule"
    RETRY = "retry", "Retry"
    # A change of the production account this one follows (``trigger_detail`` says which).
    PRODUCTION = "production", "Production change"
    # The schedule, because the account's expiry date passed (its teardown).
    EXPIRED = "expired", "Expired"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)
# The runs that build an account: the latest succeeded one is what is applied.
BUILDING_KINDS = (RunKind.PROVISION, RunKind.UPDATE)


class StageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"


FINISHED_STAGE_STATUSES = (
    StageStatus.SUCCEEDED,
    StageStatus.FAILED,
    StageStatus.CANCELLED,
    StageStatus.SKIPPED,
)


class PipelineRun(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=16, choices=RunKind.choices)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.USER)
    # What the trigger was, in words (the production change a follower's update follows).
    trigger_detail = models.CharField(max_length=500, blank=True)
    # Non-empty: the workflow asks a human to approve this run's plan, and says why (an
    # update by someone the purpose's policy does not auto-approve, parity warnings).
    approval_reason = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.RUNNING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # What this run builds from, frozen at its start.
    blueprint_version = models.CharField(max_length=32, blank=True)
    config = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    explanation = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # An account's runs newest first (its page, the dashboard's latest run).
            models.Index(fields=["account", "created_at", "id"], name="run_account_created"),
        ]
        constraints = [
            # One active run per account, enforced by the database itself.
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(status__in=["running", "waiting_approval"]),
                name="one_active_run_per_account",
            )
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} {self.kind} of {self.account_id}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def duration_seconds(self) -> float:
        """From its start to its end (now, while it runs)."""
        return ((self.finished_at or timezone.now()) - self.created_at).total_seconds()


class StageRun(models.Model):
    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="stages")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    status = models.CharField(
        max_length=20, choices=StageStatus.choices, default=StageStatus.PENDING
    )
    attempt = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # The process group of the child (hook, Terraform) the attempt runs now, on the
    # worker's host: a new attempt starts only once it is gone.
    process_group = models.PositiveIntegerField(null=True, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    explanation = models.TextField(blank=True)
    retryable = models.BooleanField(default=True)
    # A retry of this stage starts again from this earlier stage (apply on a stale plan -> plan).
    retry_from = models.CharField(max_length=32, blank=True)
    # Human decisions (approve_plan).
    approval_deadline = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="decided_stages",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="unique_stage_position")
        ]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.kind} (run #{self.run_id}, attempt {self.attempt})"

    @property
    def duration_seconds(self) -> float | None:
        """Of its latest attempt, from its start to its end (now, while it runs); None if
        it never started."""
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class LogLine(models.Model):
    """One line of a stage's log, redacted before storage. Numbers go on across attempts."""

    stage = models.ForeignKey(StageRun, on_delete=models.CASCADE, related_name="log_lines")
    attempt = models.PositiveIntegerField()
    number = models.PositiveIntegerField()
    time = models.DateTimeField()
    text = models.TextField()

    class Meta:
        ordering = ["stage", "number"]
        constraints = [
            models.UniqueConstraint(fields=["stage", "number"], name="unique_log_line_number")
        ]

    def __str__(self) -> str:
        return f"{self.number}: {self.text[:60]}"


class Artifact(models.Model):
    """A file kept with the run (rendered Terraform, a saved plan) so any worker can use it."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_artifact_name")]

    def __str__(self) -> str:
        return f"{self.name} (run #{self.run_id})"


class OutboxMessage(models.Model):
    """A task to send, written in the transaction that decided it (pipelines/outbox.py).

    The send after commit tries once; the relay sends whatever is left once the
    broker answers again. Sent rows are kept a while for the record, then pruned.
    """

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(sent_at__isnull=True),
                name="outbox_unsent",
            )
        ]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)} ({'sent' if self.sent_at else 'unsent'})"


class GoldenStatus(models.TextChoices):
    BUILDING = "building", "Building"
    READY = "ready", "Ready"
    RETIRED = "retired", "Retired"
    FAILED = "failed", "Failed"


class GoldenCopy(models.Model):
    """A masked golden copy of one production database: a template database on the
    target server that accounts' databases are copied from (pipelines.dbclone.golden).
    Ready only after masking, the leak scan and the scrub passed."""

    blueprint = models.CharField(max_length=64)
    service = models.CharField(max_length=32)
    target = models.CharField(max_length=63)  # connection name of the server holding it
    rules_digest = models.CharField(max_length=64)  # source, masking and scrub it was built by
    database = models.CharField(max_length=63, unique=True, null=True, blank=True)
    role = models.CharField(max_length=63, blank=True)
    status = models.CharField(
        max_length=16, choices=GoldenStatus.choices, default=GoldenStatus.BUILDING
    )
    taken_at = models.DateTimeField(null=True, blank=True)  # its source snapshot's time
    table_counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "golden copies"
        indexes = [models.Index(fields=["blueprint", "service", "status", "-taken_at"])]

    def __str__(self) -> str:
        return f"golden {self.database or self.pk} ({self.blueprint}/{self.service}, {self.status})"
