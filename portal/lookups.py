"""The objects an interface acts on, looked up for the asking user: one place for web
pages and the API alike.

Each answers the object, or raises Django's ``Http404`` for one the user may not see
(no hint that it exists) and ``PermissionDenied`` for one the user sees but may not act
on. Pages show both as Django does; REST framework's handler answers 404 and 403 with
the same message.
"""

from __future__ import annotations

from typing import TypeVar

from django.contrib.auth.models import User as DjangoUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts_app import expiry, permissions, selectors
from accounts_app.models import Account, AccountRequest, ExtensionRequest
from accounts_app.selectors import User
from pipelines.models import PipelineRun, StageRun
from pipelines.selectors import stage_in_run

T = TypeVar("T")


def _found(found: T | None, *, what: str) -> T:
    """What a selector found, or a 404 saying there is no such thing."""
    if found is None:
        raise Http404(f"no such {what}")
    return found


def visible_account(*, user: User, account_id: int) -> Account:
    return _found(selectors.visible_account(user=user, account_id=account_id), what="account")


def editable_account(*, user: User, account_id: int) -> Account:
    account = visible_account(user=user, account_id=account_id)
    if not permissions.can_edit(user=user, account=account):
        raise PermissionDenied("only the owner or an admin edits this account")
    return account


def visible_request(*, user: User, request_id: int) -> AccountRequest:
    return _found(selectors.visible_request(user=user, request_id=request_id), what="request")


def own_request(*, user: User, request_id: int) -> AccountRequest:
    """A request its requester may withdraw or send again."""
    req = visible_request(user=user, request_id=request_id)
    if not permissions.can_change_request(user=user, account_request=req):
        raise PermissionDenied("only the requester may withdraw or send again a request")
    return req


def visible_extension(*, user: DjangoUser, extension_id: int) -> ExtensionRequest:
    """An extension of an account the (signed-in) user may see."""
    return _found(expiry.visible_extension(user=user, extension_id=extension_id), what="extension")


def visible_run(*, user: User, run_id: int) -> PipelineRun:
    """The run with its account and stages."""
    return _found(selectors.visible_run(user=user, run_id=run_id), what="run")


def visible_stage(*, user: User, run_id: int, stage_id: int) -> tuple[PipelineRun, StageRun]:
    """The run and its stage."""
    run = visible_run(user=user, run_id=run_id)
    return run, _found(stage_in_run(run=run, stage_id=stage_id), what="stage in this run")
