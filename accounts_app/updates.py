"""Editing and upgrading an account: the diff of its Terraform first, then an update run.

An edit gives the account a new config; an upgrade renders its config with the
blueprint's newer version. Either way, before anything runs the user sees a unified
diff, file by file, of the new render against the last applied one (the rendered files
the latest succeeded provision or update stored with its run), and the run is an
``update``: render, plan, approval per policy, apply. The account takes the run's
config once the run succeeds (``record_finished_update``), so a rejected or failed
edit leaves it as it was.

Approval per policy: the blueprint's ``approval.plan`` as for every run, and, when the
purpose's policy would not auto-approve the person asking (as for a request), an
approver decides the plan; parity warnings (``enforce: warn``) go to that approver too.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from accounts_app import parity, permissions, policies
from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.production import RegistrationInvalid, register_production
from accounts_app.services import RequestInvalid, RequestRefused
from pipelines import selectors as run_selectors
from pipelines.blueprints import Blueprint, BlueprintError, ConfigInvalid, load_blueprint
from pipelines.models import Artifact, PipelineRun, RunKind, RunStatus, Trigger
from pipelines.rendering import RenderError, render_blueprint
from pipelines.services import RunRefused, start_run
from pipelines.stages.render import TERRAFORM_PREFIX, template_context

# Accounts an edit or upgrade may update (a failed one too: its config may be the fault).
UPDATABLE_STATUSES = (AccountStatus.READY, AccountStatus.FAILED)
MAX_DIFF_LINES_PER_FILE = 5000


class FileChange(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class FileDiff:
    path: str
    change: FileChange
    diff: str  # unified diff, a/<path> against b/<path>

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "change": str(self.change), "diff": self.diff}


@dataclass(frozen=True)
class UpdatePlan:
    """What an update would do, checked, nothing written: its config and its diff."""

    account: Account
    blueprint: Blueprint
    config: dict[str, Any]  # filled with the blueprint's defaults
    from_version: str | None  # the version last applied (None: nothing applied yet)
    base_run: int | None  # the run whose render is the diff's base
    files: list[FileDiff] = field(default_factory=list)
    parity_warnings: list[str] = field(default_factory=list)

    @property
    def to_version(self) -> str:
        return self.blueprint.version

    @property
    def changed(self) -> bool:
        return bool(self.files)

    def text(self) -> str:
        """The whole diff as one text, file after file (what the command line prints)."""
        if not self.files:
            return f"no change to the rendered Terraform of {self.account.name}\n"
        return "".join(f.diff if f.diff.endswith("\n") else f.diff + "\n" for f in self.files)

    def digest(self) -> str:
        """Names what was reviewed: a form starts the update only if it is still this."""
        seen = {
            "config": self.config,
            "base_run": self.base_run,
            "to_version": self.to_version,
            "files": [f.as_dict() for f in self.files],
        }
        return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account.name,
            "blueprint": self.blueprint.name,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "base_run": self.base_run,
            "changed": self.changed,
            "files": [f.as_dict() for f in self.files],
            "parity_warnings": list(self.parity_warnings),
        }


# --- versions ------------------------------------------------------------------------------


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"[.+-]", version.strip().lstrip("vV"))
        if part
    )


def is_newer(candidate: str, *, than: str | None) -> bool:
    """Whether blueprint version ``candidate`` is newer than ``than`` (1.10.0 > 1.9.0)."""
    if not than:
        return False
    return _version_key(candidate) > _version_key(than)


def upgrade_available(account: Account) -> str | None:
    """The blueprint's version when it is newer than the account's, else None."""
    if account.purpose == Purpose.PRODUCTION or account.status not in UPDATABLE_STATUSES:
        return None
    try:
        blueprint = load_blueprint(account.blueprint)
    except BlueprintError:
        return None
    current = parity.built_version(account)
    return blueprint.version if is_newer(blueprint.version, than=current) else None


# --- the diff --------------------------------------------------------------------------------


def _stored_render(run: PipelineRun | None) -> dict[str, bytes]:
    if run is None:
        return {}
    rows = Artifact.objects.filter(run=run, name__startswith=TERRAFORM_PREFIX).values_list(
        "name", "data"
    )
    return {name[len(TERRAFORM_PREFIX) :]: bytes(data) for name, data in rows}


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").splitlines(keepends=True)


def diff_files(old: dict[str, bytes], new: dict[str, bytes]) -> list[FileDiff]:
    """A unified diff per file that differs, in path order."""
    found = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        change = (
            FileChange.ADDED
            if before is None
            else FileChange.REMOVED
            if after is None
            else FileChange.CHANGED
        )
        lines = list(
            difflib.unified_diff(
                _lines(before or b""),
                _lines(after or b""),
                fromfile="/dev/null" if before is None else f"a/{path}",
                tofile="/dev/null" if after is None else f"b/{path}",
            )
        )
        if len(lines) > MAX_DIFF_LINES_PER_FILE:
            more = len(lines) - MAX_DIFF_LINES_PER_FILE
            lines = [*lines[:MAX_DIFF_LINES_PER_FILE], f"... {more} more lines\n"]
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        found.append(FileDiff(path=path, change=change, diff=text))
    return found


def _render(*, blueprint: Blueprint, account: Account, config: dict[str, Any]) -> dict[str, bytes]:
    """The files the render stage would store for this config (the same context)."""
    context = template_context(
        blueprint,
        config,
        account_name=account.name,
        purpose=account.purpose,
        cloud_account_id=account.cloud_account_id,
    )
    try:
        return dict(render_blueprint(blueprint.terraform_dir, context).files)
    except RenderError as exc:
        raise RequestInvalid({"config": [f"the blueprint does not render: {exc}"]}) from None


def plan_update(*, account: Account, config: Any = None) -> UpdatePlan:
    """Check an update of ``account`` to ``config`` (None: its own config, under the
    blueprint's current version: an upgrade) and diff its render; nothing is written.

    Raises RequestInvalid naming ``config`` (each problem with its JSON path, parity
    refusals with production's value) and RequestRefused when the account cannot be
    updated now.
    """
    if account.status not in UPDATABLE_STATUSES and account.purpose != Purpose.PRODUCTION:
        raise RequestRefused(
            f"account {account.name} is {account.get_status_display().lower()}: only a ready "
            "or failed account is edited or upgraded"
        )
    try:
        blueprint = load_blueprint(account.blueprint)
    except BlueprintError as exc:
        raise RequestRefused(f"account {account.name} cannot be updated: {exc}") from exc
    given = account.config if config is None else config
    try:
        # The account's name is the one source of its name: an edit cannot rename it.
        filled = blueprint.validate_config(blueprint.config_for_account(given, name=account.name))
    except ConfigInvalid as exc:
        by_path: dict[str, list[str]] = {}
        for problem in exc.problems:
            by_path.setdefault(problem.path, []).append(problem.message)
        raise RequestInvalid(
            {"config": [str(problem) for problem in exc.problems]}, errors_by_path=by_path
        ) from None
    warnings: list[str] = []
    if account.purpose != Purpose.PRODUCTION:
        refusals, warnings = parity.request_problems(
            blueprint=blueprint, purpose=account.purpose, config=filled
        )
        if refusals:
            raise RequestInvalid(
                {"config": [f"{path}: {message}" for path, message in refusals.items()]},
                errors_by_path={path: [message] for path, message in refusals.items()},
            )
    base = run_selectors.last_applied_run(account.pk)
    new = _render(blueprint=blueprint, account=account, config=filled)
    return UpdatePlan(
        account=account,
        blueprint=blueprint,
        config=filled,
        from_version=(base.blueprint_version or None) if base else parity.built_version(account),
        base_run=base.pk if base else None,
        files=diff_files(_stored_render(base), new),
        parity_warnings=warnings,
    )


# --- starting the update ---------------------------------------------------------------------


def approval_reason(*, plan: UpdatePlan, asked_by: User | None) -> str:
    """Why an approver must decide this update's plan; empty when the policy auto-approves.

    ``asked_by``: whose word the update is (the editor; for a follower, its owner).
    """
    purpose = plan.account.purpose
    policy = plan.blueprint.policy_for(purpose)
    groups = policies.auto_approving_groups(
        policy=policy, roles=permissions.effective_roles(asked_by)
    )
    reasons = []
    if not groups:
        allowed = ", ".join(policy.auto_approve) or "nobody"
        who = asked_by.get_username() if asked_by is not None else "the portal"
        reasons.append(
            f"the {purpose} policy of {plan.blueprint.name} auto-approves {allowed}, "
            f"not {who}: an approver decides this update"
        )
    if plan.parity_warnings:
        reasons.append("parity warnings: " + "; ".join(plan.parity_warnings))
    return "; ".join(reasons)


def start_update(
    *,
    plan: UpdatePlan,
    user: User | None,
    asked_by: User | None,
    trigger: Trigger = Trigger.USER,
    trigger_detail: str = "",
) -> PipelineRun:
    """Start the update run ``plan`` describes. Raises RunConflict (a run is active) or
    RunRefused; nothing is written then."""
    try:
        return start_run(
            plan.account,
            RunKind.UPDATE,
            user=user,
            trigger=trigger,
            config=plan.config,
            trigger_detail=trigger_detail,
            approval_reason=approval_reason(plan=plan, asked_by=asked_by),
        )
    except (ConfigInvalid, BlueprintError) as exc:
        raise RunRefused(f"the update cannot start: {exc}") from exc


def _describe(plan: UpdatePlan, *, what: str) -> str:
    files = ", ".join(f.path for f in plan.files) or "no file"
    versions = (
        f" {plan.from_version} -> {plan.to_version}"
        if plan.from_version and plan.from_version != plan.to_version
        else ""
    )
    return f"{what}{versions}: {files} changed"[:500]


def update_account(
    *, account: Account, user: User, config: Any
) -> tuple[UpdatePlan, PipelineRun | None]:
    """Edit the account's config: (the diff, the update run started).

    Callers check ``permissions.can_edit``. A production account is registered, not
    built: its registration is updated (no run; its followers follow, see
    ``accounts_app.following``). Raises RequestInvalid, RequestRefused, RunConflict.
    """
    plan = plan_update(account=account, config=config)
    if account.purpose == Purpose.PRODUCTION:
        try:
            register_production(name=account.name, blueprint=account.blueprint, config=config)
        except RegistrationInvalid as exc:
            raise RequestInvalid(exc.by_field()) from exc
        return plan, None
    run = start_update(
        plan=plan, user=user, asked_by=user, trigger_detail=_describe(plan, what="edit")
    )
    return plan, run


def upgrade_account(*, account: Account, user: User) -> tuple[UpdatePlan, PipelineRun]:
    """Render the account's config with its blueprint's newer version and start the update.

    Raises RequestRefused when the account is at the blueprint's version already.
    """
    available = upgrade_available(account)
    if available is None:
        raise RequestRefused(
            f"account {account.name} is at its blueprint's version already: nothing to upgrade"
        )
    plan = plan_update(account=account)
    run = start_update(
        plan=plan, user=user, asked_by=user, trigger_detail=_describe(plan, what="upgrade")
    )
    return plan, run


@dataclass(frozen=True)
class UpgradeResult:
    account: Account
    run: PipelineRun | None
    problem: str = ""


def upgradable_accounts(blueprint_name: str) -> list[Account]:
    """The clones of the blueprint whose version is older than the blueprint's."""
    accounts = Account.objects.filter(
        blueprint=blueprint_name, status__in=UPDATABLE_STATUSES
    ).exclude(purpose=Purpose.PRODUCTION)
    return [a for a in accounts.select_related("owner").order_by("name") if upgrade_available(a)]


def upgrade_all(*, blueprint_name: str, user: User) -> list[UpgradeResult]:
    """One update run per out-of-date account of the blueprint, each under its own
    purpose's policy; an account that cannot start says why and the others go on.

    Callers check ``permissions.is_admin``.
    """
    results = []
    for account in upgradable_accounts(blueprint_name):
        try:
            with transaction.atomic():
                _, run = upgrade_account(account=account, user=user)
        except (RequestInvalid, RequestRefused, RunRefused) as exc:
            results.append(UpgradeResult(account=account, run=None, problem=exc.message))
        else:
            results.append(UpgradeResult(account=account, run=run))
    return results


def record_finished_update(run: PipelineRun) -> None:
    """A succeeded update's config becomes the account's (run_finished, in its transaction)."""
    if run.kind == RunKind.UPDATE and run.status == RunStatus.SUCCEEDED:
        Account.objects.filter(pk=run.account_id).exclude(config=run.config).update(
            config=run.config
        )
