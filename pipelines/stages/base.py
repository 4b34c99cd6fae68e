"""The stage contract: what a stage executor gets and what it may raise.

An executor is a plain function ``execute(ctx: StageContext) -> dict``. It
returns the stage's outputs (JSON-serialisable) or raises ``StageError``.
Every executor must be idempotent: run twice, or killed at any line and run
again, it reaches the same end state with no duplicate side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.models import RunKind, Trigger

if TYPE_CHECKING:
    from accounts_app.models import Account
    from pipelines.blueprints import Blueprint


class StageError(Exception):
    """A stage failed. ``explanation`` is one line for people; never a secret."""

    def __init__(
        self,
        explanation: str,
        *,
        retryable: bool = True,
        detail: str = "",
        retry_from: str = "",
    ) -> None:
        super().__init__(explanation)
        self.explanation = explanation
        self.retryable = retryable
        # Logged with the failure (e.g. the tail of a hook's output); redacted like any line.
        self.detail = detail
        # A retry starts again from this earlier stage kind (apply on a stale plan -> "plan").
        self.retry_from = retry_from


class StageCancelled(StageError):
    """The run was cancelled while this stage ran."""

    def __init__(self, explanation: str = "cancelled by a user") -> None:
        super().__init__(explanation, retryable=True)


class StageWaiting(Exception):
    """The stage needs a human decision; the engine parks it in waiting_approval."""

    def __init__(self, outputs: Mapping[str, Any], *, timeout_hours: float = 72) -> None:
        super().__init__("waiting for approval")
        self.outputs = dict(outputs)
        # Past this, the reaper fails the stage and the decision buttons are gone.
        self.timeout_hours = timeout_hours


class StageLogger(Protocol):
    """Writes numbered log lines for the stage; redacts known secrets first."""

    def __call__(self, text: str) -> None: ...


@dataclass(frozen=True)
class AccountInfo:
    """What a stage may know about the account, without touching the ORM."""

    pk: int
    name: str
    purpose: str
    cloud_account_id: str
    config: dict[str, Any]
    outputs: dict[str, Any]
    protected: bool = False

    @classmethod
    def of(cls, account: Account, *, config: Mapping[str, Any]) -> AccountInfo:
        """The account row as a stage sees it, with the run's config."""
        return cls(
            pk=account.pk,
            name=account.name,
            purpose=account.purpose,
            cloud_account_id=account.cloud_account_id,
            config=dict(config),
            outputs=dict(account.outputs),
            protected=account.protected,
        )


def _unchanged(text: str) -> str:
    return text


def _ignore_pid(pid: int) -> None:
    return None


def _nothing() -> None:
    return None


@dataclass
class StageContext:
    account: AccountInfo
    run_id: int
    run_kind: RunKind
    stage_id: int
    stage_kind: str
    attempt: int
    blueprint: Blueprint
    config: dict[str, Any]
    # Outputs of earlier stages of this run, keyed by stage kind.
    previous: dict[str, dict[str, Any]]
    workdir: Path
    log: StageLogger
    # Register a value so that it is redacted from every later log line.
    add_secret: Callable[[str], None]
    is_cancelled: Callable[[], bool]
    # Files stored with the run (rendered Terraform, plan files): name -> bytes.
    artifacts: ArtifactStore = field(repr=False)
    # The account's records: values learned, encrypted secrets, current endpoints.
    records: AccountRecords = field(repr=False)
    # What started the run: a user, the schedule (an expiry) or a retry.
    trigger: Trigger = Trigger.USER
    # The run's redactor (every secret known to it), for what a stage stores itself.
    redact: Callable[[str], str] = field(default=_unchanged, repr=False)
    # Called with the pid of every child process the stage starts (hooks, Terraform).
    on_process_start: Callable[[int], None] = field(default=_ignore_pid, repr=False)
    # Non-empty: the workflow wants a human to approve this run's plan, for this reason.
    approval_reason: str = ""
    # The blueprint version this run builds: ``blueprint``'s, or for a drift check the
    # version last applied (its Terraform is stored with the run, not rendered again).
    blueprint_version: str = ""
    # Bursts of lines in one INSERT each: ``hold_log`` keeps the lines logged from then
    # on (use ``log_with_outcome``), ``flush_log`` writes those kept (the runner's
    # ``on_idle``).
    hold_log: Callable[[], None] = field(default=_nothing, repr=False)
    flush_log: Callable[[], None] = field(default=_nothing, repr=False)


def log_with_outcome(ctx: StageContext) -> None:
    """Keep the stage's lines from now on until its end: the engine writes those still
    kept with the stage's outcome, in the transaction that records it (one write fewer
    than an INSERT of their own). Still live: the runner's ``on_idle`` (``flush_log``)
    writes a program's bursts as they come, and the heartbeat whatever waits longer."""
    ctx.hold_log()


class AccountRecords(Protocol):
    """What a stage may write about its account; the only way stage code reaches it."""

    def record(self, **values: Any) -> None: ...  # cloud_account_id, outputs, endpoints

    def store_secret(self, *, name: str, value: str) -> None: ...

    def read_secret(self, name: str) -> str | None: ...

    def delete_secret(self, name: str) -> None: ...

    def endpoints(self) -> dict[str, Any]: ...  # as stored now, not frozen at stage start

    # The resources registered for the production account of this name (None: none).
    def reference_resources(self, production: str) -> list[dict[str, Any]] | None: ...


class ArtifactStore(Protocol):
    """Files kept by the portal so a worker on another machine can lay them out."""

    # Exactly these files (full names) under prefix, the others there deleted: sha256 by name.
    def replace(self, *, prefix: str, files: Mapping[str, bytes]) -> dict[str, str]: ...

    def read(self, prefix: str) -> dict[str, bytes]: ...  # by full name; empty: none stored

    def lay_out(self, *, prefix: str, directory: Path) -> list[Path]: ...


Executor = Callable[[StageContext], dict[str, Any]]
