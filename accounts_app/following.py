"""Clones that follow production (parity ``follow_production: true``).

When production changes (its registration or config updated, its blueprint version
raised, an update run of a portal-built production applied), each following account
(same blueprint, a purpose that follows, ready, failed or being built) gets an update run with
production's values for its purpose's ``equal`` paths and the blueprint's current
version, under its purpose's approval policy as if its owner had asked. The run says
which change started it (trigger ``production``, ``trigger_detail``). A follower that
cannot follow (the update cannot start, fails or is rejected) keeps the reason in
``Account.follow_problem``, shown on its page and the dashboard, until an update brings
it level with production.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from accounts_app import parity, updates
from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.services import RequestInvalid, RequestRefused
from pipelines import parity as parity_checks
from pipelines.blueprints import Blueprint, BlueprintError, load_blueprint
from pipelines.engine import active_run_for
from pipelines.models import BUILDING_KINDS, PipelineRun, RunKind, RunStatus, Trigger
from pipelines.services import RunConflict, RunRefused

logger = logging.getLogger(__name__)

# Followers: what an update may start on, and those being built (they are told they
# cannot follow, since their run builds production's old values).
FOLLOWING_STATUSES = (*updates.UPDATABLE_STATUSES, AccountStatus.PROVISIONING)


@dataclass(frozen=True)
class FollowResult:
    account: Account
    run: PipelineRun | None
    problem: str = ""


def _rules_of(production: Account) -> Blueprint | None:
    """The production's blueprint when it names this production as its reference."""
    try:
        blueprint = load_blueprint(production.blueprint)
    except BlueprintError:
        return None
    if blueprint.parity is None or blueprint.parity.production != production.name:
        return None
    return blueprint


def followers_of(production: Account) -> list[Account]:
    blueprint = _rules_of(production)
    if blueprint is None or blueprint.parity is None:
        return []
    purposes = [p for p, rules in blueprint.parity.purposes.items() if rules.follow_production]
    return list(
        Account.objects.filter(
            blueprint=production.blueprint,
            purpose__in=purposes,
            status__in=FOLLOWING_STATUSES,
        )
        .exclude(purpose=Purpose.PRODUCTION)
        .select_related("owner")
        .order_by("name")
    )


def following_config(
    *, config: dict[str, Any], production_config: dict[str, Any], paths: tuple[str, ...]
) -> dict[str, Any]:
    """``config`` with production's value at each dotted path (a missing one removed)."""
    followed = copy.deepcopy(config)
    for path in paths:
        *parents, last = path.split(".")
        target = followed
        for segment in parents:
            child = target.get(segment)
            if not isinstance(child, dict):
                child = target[segment] = {}
            target = child
        value = parity_checks.config_value(production_config, path)
        if value is None:
            target.pop(last, None)
        else:
            target[last] = copy.deepcopy(value)
    return followed


def _flag(account: Account, problem: str) -> None:
    Account.objects.filter(pk=account.pk).update(follow_problem=problem[:2000])
    account.follow_problem = problem


def follow(*, production: Account, change: str) -> list[FollowResult]:
    """Queue an update run for every follower of ``production``; flag those that cannot."""
    blueprint = _rules_of(production)
    if blueprint is None or blueprint.parity is None:
        return []
    results = []
    for account in followers_of(production):
        paths = blueprint.parity.rules_for(account.purpose).equal
        config = following_config(
            config=account.config, production_config=production.config, paths=paths
        )
        try:
            with transaction.atomic():
                holder = active_run_for(account.pk)
                if holder is not None:
                    raise RunConflict(account_name=account.name, holder_id=holder.pk)
                plan = updates.plan_update(account=account, config=config)
                if not plan.changed and plan.from_version == plan.to_version:
                    results.append(FollowResult(account=account, run=None))
                    continue  # already level with production: nothing to follow
                run = updates.start_update(
                    plan=plan,
                    user=None,
                    asked_by=account.owner,
                    trigger=Trigger.PRODUCTION,
                    trigger_detail=change,
                )
        except (RequestInvalid, RequestRefused, RunRefused) as exc:
            problem = f"cannot follow {change}: {exc.message}"
            _flag(account, problem)
            results.append(FollowResult(account=account, run=None, problem=problem))
        else:
            results.append(FollowResult(account=account, run=run))
    return results


def follows_production(account: Account) -> bool:
    """Whether the account is level with its production: equal paths and version."""
    try:
        blueprint = load_blueprint(account.blueprint)
    except BlueprintError:
        return False
    if blueprint.parity is None:
        return True
    production = Account.objects.filter(
        name=blueprint.parity.production, purpose=Purpose.PRODUCTION
    ).first()
    if production is None:
        return True
    paths = blueprint.parity.rules_for(account.purpose).equal
    same = all(
        parity_checks.config_value(account.config, p)
        == parity_checks.config_value(production.config, p)
        for p in paths
    )
    return same and not updates.is_newer(blueprint.version, than=parity.built_version(account))


def is_follower_run(run: PipelineRun) -> bool:
    """An update the portal started for a production change (a retry of one too)."""
    return run.kind == RunKind.UPDATE and run.created_by_id is None and bool(run.trigger_detail)


# --- receivers (connected in accounts_app.apps) ------------------------------------------


def on_production_changed(sender: object, *, account: Account, change: str, **_: object) -> None:
    follow(production=account, change=change)


def on_run_finished(sender: object, *, run: PipelineRun | None = None, **_: object) -> None:
    """Receiver of pipelines.signals.run_finished, in the run's transaction."""
    if run is None:
        return
    updates.record_finished_update(run)
    account = Account.objects.get(pk=run.account_id)
    if account.purpose == Purpose.PRODUCTION:
        if run.kind in BUILDING_KINDS and run.status == RunStatus.SUCCEEDED:
            change = (
                f"production {account.name}: {run.kind} run #{run.pk} applied "
                f"(blueprint {run.blueprint_version})"
            )
            try:
                with transaction.atomic():
                    follow(production=account, change=change)
            except Exception:  # the run's own result must commit whatever the followers do
                logger.exception("following %s failed", change)
        return
    if run.status == RunStatus.SUCCEEDED:
        if account.follow_problem and follows_production(account):
            _flag(account, "")
    elif is_follower_run(run):
        _flag(
            account,
            f"cannot follow {run.trigger_detail}: update run #{run.pk} "
            f"{run.get_status_display().lower()}: {run.explanation}",
        )
