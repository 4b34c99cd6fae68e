"""The REST API: thin views over the workflow services and the selectors.

Who may do what comes from accounts_app.permissions: what a user may not see
answers 404, what they may see but not do answers 403. Expected failures raised
by services (a run already active, a request already decided, bad input) become
responses in one place, ``portal.api_errors``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from accounts_app import (
    decommission,
    parity,
    permissions,
    production,
    request_actions,
    selectors,
    services,
    updates,
)
from accounts_app.api import serializers as s
from accounts_app.models import Account, AccountRequest, Purpose
from accounts_app.permissions import Who
from pipelines import services as run_services
from pipelines.blueprints import Blueprint
from pipelines.models import FINISHED_STAGE_STATUSES, PipelineRun, RunKind, StageRun
from pipelines.selectors import LOG_PAGE_SIZE, log_after
from portal import lookups


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class PortalAPIView(APIView):
    # Token first, so an anonymous caller gets 401 with a WWW-Authenticate header.
    authentication_classes = [TokenAuthentication, SessionAuthentication]

    def paginate(
        self,
        request: Request,
        *,
        items: QuerySet[Any] | list[Blueprint],
        serializer: type[Serializer],
    ) -> Response:
        _valid(s.PageQuery, request.query_params)  # 400 naming a bad limit or offset
        paginator = Pagination()
        if isinstance(items, QuerySet):
            # The page of ids first (no joins for the rows an offset skips), then its rows.
            ids = paginator.paginate_queryset(items.values_list("pk", flat=True), request, self)
            page: list[Any] = selectors.rows_in_order(items, ids=list(ids or []))
        else:
            page = paginator.paginate_queryset(items, request, view=self) or []  # type: ignore[arg-type]
        return paginator.get_paginated_response(serializer(page, many=True).data)


# A filtered page of what the caller may see (GET): subclasses name the filter (``query``),
# the rows' shape and how to select them; ``listed`` gives the schema. No docstring here:
# REST framework's schema would show it as every list's description.
class ListAPIView(PortalAPIView):
    query: type[Serializer]
    rows: type[Serializer]

    def items(self, *, request: Request, filters: dict[str, Any]) -> QuerySet[Any]:
        raise NotImplementedError

    def get(self, request: Request) -> Response:
        filters = _valid(self.query, request.query_params)
        items = self.items(request=request, filters=filters)
        return self.paginate(request, items=items, serializer=self.rows)


ListView = TypeVar("ListView", bound=type[ListAPIView])


def listed(
    *, page: type[Serializer], operation_id: str, description: str | None = None
) -> Callable[[ListView], ListView]:
    """The schema of a list view's GET: its filter and page parameters, its page shape."""

    def decorate(view: ListView) -> ListView:
        schema = extend_schema(
            parameters=[view.query, s.PageQuery],
            responses={200: page, **LIST_ERRORS},
            operation_id=operation_id,
            description=description,
        )
        return extend_schema_view(get=schema)(view)

    return decorate


def acting_user(request: Request) -> User:
    """The authenticated user (every view but ``not_found`` requires one)."""
    user = request.user
    assert isinstance(user, User), "authenticated views only"
    return user


def _valid(serializer: type[Serializer], data: Any) -> dict[str, Any]:
    checked = serializer(data=data)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


def _blueprint_or_404(name: str) -> Blueprint:
    blueprint = selectors.blueprint_named(name)
    if blueprint is None:
        raise Http404("no such blueprint")
    return blueprint


def _run_response(request: Request, run_id: int, code: int = status.HTTP_200_OK) -> Response:
    return Response(
        s.RunSerializer(lookups.visible_run(user=request.user, run_id=run_id)).data, status=code
    )


BAD_INPUT = OpenApiResponse(description="Invalid: the body of the answer names each field.")
LIST_ERRORS = {400: OpenApiResponse(description="A filter has a bad value.")}
NOT_FOUND = OpenApiResponse(s.ErrorSerializer, description="Not found, or not yours.")
FORBIDDEN = OpenApiResponse(s.ErrorSerializer, description="Not allowed for your role.")
CONFLICT = OpenApiResponse(s.ConflictSerializer, description="Does not fit the current state.")
ACTION_ERRORS = {400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT}


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([AllowAny])
def not_found(request: Request) -> Response:
    return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)


# --- blueprints ------------------------------------------------------------------------------


class BlueprintListView(PortalAPIView):
    @extend_schema(
        parameters=[s.PageQuery],
        responses={200: s.PaginatedBlueprints, **LIST_ERRORS},
        operation_id="blueprints_list",
    )
    def get(self, request: Request) -> Response:
        return self.paginate(
            request, items=selectors.usable_blueprints(), serializer=s.BlueprintSerializer
        )


class BlueprintDetailView(PortalAPIView):
    @extend_schema(responses={200: s.BlueprintDetailSerializer, 404: NOT_FOUND})
    def get(self, request: Request, name: str) -> Response:
        return Response(s.BlueprintDetailSerializer(_blueprint_or_404(name)).data)


class BlueprintRenderView(PortalAPIView):
    @extend_schema(request=s.RenderInput, responses={200: s.RenderOutput, **ACTION_ERRORS})
    def post(self, request: Request, name: str) -> Response:
        """Preview the Terraform files a config renders to; nothing is stored."""
        if not permissions.can_request(request.user):
            raise PermissionDenied("only requesters may preview blueprints")
        blueprint = _blueprint_or_404(name)
        body = _valid(s.RenderInput, request.data)
        files = services.preview_files(
            blueprint=blueprint,
            config=body["config"],
            account_name=body["name"],
            purpose=body["purpose"],
        )
        listed = [
            {
                "path": path,
                "sha256": hashlib.sha256(data).hexdigest(),
                "content": data.decode("utf-8", errors="replace"),
            }
            for path, data in files.items()
        ]
        return Response(s.RenderOutput({"files": listed}).data)


# --- accounts and requests ---------------------------------------------------------------------


def _create_request(request: Request) -> tuple[Account, AccountRequest]:
    if not permissions.can_request(request.user):
        raise PermissionDenied("only requesters may request accounts")
    body = _valid(s.AccountRequestInput, request.data)
    return services.request_account(user=acting_user(request), **body)


@listed(page=s.PaginatedAccounts, operation_id="accounts_list")
class AccountListView(ListAPIView):
    query, rows = s.AccountFilter, s.AccountSerializer

    def items(self, *, request: Request, filters: dict[str, Any]) -> QuerySet[Any]:
        return selectors.filter_accounts(selectors.visible_accounts(request.user), **filters)

    @extend_schema(
        request=s.AccountRequestInput,
        responses={201: s.AccountCreatedSerializer, **ACTION_ERRORS},
        operation_id="accounts_create",
    )
    def post(self, request: Request) -> Response:
        """Request an account; an auto-approved request starts its provision run at once.

        With purpose production (admins only): register production as it is, no run.
        """
        if isinstance(request.data, dict) and request.data.get("purpose") == Purpose.PRODUCTION:
            return _register_production(request)
        account, req = _create_request(request)
        run = selectors.latest_run(account)
        account.request = req  # type: ignore[attr-defined]
        account.run = run.pk if run else None  # type: ignore[attr-defined]
        return Response(s.AccountCreatedSerializer(account).data, status=status.HTTP_201_CREATED)


def _register_production(request: Request) -> Response:
    if not permissions.is_admin(request.user):
        raise PermissionDenied("only admins may register production accounts")
    body = _valid(s.ProductionInput, request.data)
    body.pop("purpose")
    try:
        account, created = production.register_production(**body)
    except production.RegistrationInvalid as exc:
        return Response(exc.by_field(), status=status.HTTP_400_BAD_REQUEST)
    code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return Response(s.AccountSerializer(account).data, status=code)


class AccountDetailView(PortalAPIView):
    @extend_schema(responses={200: s.AccountDetailSerializer, 404: NOT_FOUND})
    def get(self, request: Request, account_id: int) -> Response:
        account = selectors.account_with_runs(user=request.user, account_id=account_id)
        if account is None:
            raise Http404("no such account")
        return Response(s.AccountDetailSerializer(account).data)

    @extend_schema(
        request=s.UpdateInput, responses={201: s.UpdateOutput, 200: s.UpdateOutput, **ACTION_ERRORS}
    )
    def patch(self, request: Request, account_id: int) -> Response:
        """Edit the account's config: answers the diff and the update run started (render,
        plan, approval per policy, apply). Production (admins): its registration is updated
        and its followers follow; no run (200)."""
        account = lookups.editable_account(user=request.user, account_id=account_id)
        body = _valid(s.UpdateInput, request.data)
        plan, run = updates.update_account(
            account=account, user=acting_user(request), config=body["config"]
        )
        return _update_response(request, plan=plan, run=run)


def _update_response(
    request: Request, *, plan: updates.UpdatePlan, run: PipelineRun | None
) -> Response:
    shown = lookups.visible_run(user=request.user, run_id=run.pk) if run else None
    data = {"diff": plan.as_dict(), "run": s.RunSerializer(shown).data if shown else None}
    code = status.HTTP_201_CREATED if run else status.HTTP_200_OK
    return Response(data, status=code)


class AccountDiffView(PortalAPIView):
    @extend_schema(parameters=[s.DiffQuery], responses={200: s.DiffSerializer, **ACTION_ERRORS})
    def get(self, request: Request, account_id: int) -> Response:
        """The diff an edit (``?config=<JSON>`` or a body ``{"config": ...}``) or, with no
        config, an upgrade would make, file by file; nothing is started."""
        account = lookups.editable_account(user=request.user, account_id=account_id)
        config = _valid(s.DiffQuery, request.query_params).get("config")
        if config is None and isinstance(request.data, dict) and "config" in request.data:
            config = _valid(s.UpdateInput, request.data)["config"]
        plan = updates.plan_update(account=account, config=config)
        return Response(s.DiffSerializer(plan.as_dict()).data)


class AccountUpgradeView(PortalAPIView):
    @extend_schema(request=None, responses={201: s.UpdateOutput, **ACTION_ERRORS})
    def post(self, request: Request, account_id: int) -> Response:
        """Upgrade the account to its blueprint's newer version: the diff and the update run."""
        account = lookups.editable_account(user=request.user, account_id=account_id)
        plan, run = updates.upgrade_account(account=account, user=acting_user(request))
        return _update_response(request, plan=plan, run=run)


class BlueprintUpgradeView(PortalAPIView):
    @extend_schema(request=None, responses={200: s.UpgradeAllOutput, **ACTION_ERRORS})
    def post(self, request: Request, name: str) -> Response:
        """Admins: one update run per account of the blueprint older than its version, each
        under its purpose's policy; an account that cannot start says why."""
        if not permissions.can_upgrade_all(request.user):
            raise PermissionDenied("only admins upgrade every account of a blueprint")
        blueprint = _blueprint_or_404(name)
        results = updates.upgrade_all(blueprint_name=blueprint.name, user=acting_user(request))
        data = {
            "blueprint": blueprint.name,
            "version": blueprint.version,
            "results": [
                {
                    "account": result.account.name,
                    "run": result.run.pk if result.run else None,
                    "problem": result.problem,
                }
                for result in results
            ],
        }
        return Response(s.UpgradeAllOutput(data).data)


class AccountParityView(PortalAPIView):
    @extend_schema(
        parameters=[s.ParityQuery],
        responses={200: s.ParityReportSerializer, 400: BAD_INPUT, 404: NOT_FOUND, 409: CONFLICT},
    )
    def get(self, request: Request, account_id: int) -> Response:
        """The account's latest parity report (``?recompute=1``: computed now); 409 when the
        account has no production reference."""
        account = lookups.visible_account(user=request.user, account_id=account_id)
        query = _valid(s.ParityQuery, request.query_params)
        report = parity.report_for(account=account, recompute=query["recompute"])
        return Response(report.report)


class AccountRunsView(PortalAPIView):
    @extend_schema(request=s.RunInput, responses={201: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, account_id: int) -> Response:
        """Start a run; 409 names the active run holding the account.

        A teardown needs ``confirm``: the account's name typed again (400 naming it if not).
        """
        account = lookups.visible_account(user=request.user, account_id=account_id)
        if not permissions.can_start_run(user=request.user, account=account):
            raise PermissionDenied("you may not start runs on this account")
        body = _valid(s.RunInput, request.data)
        if body["kind"] == RunKind.TEARDOWN:
            run = decommission.request_teardown(
                account=account,
                user=acting_user(request),
                confirm=body["confirm"],
                reason=body["reason"],
            )
        else:
            run = services.start_account_run(
                account=account, kind=body["kind"], user=acting_user(request)
            )
        return _run_response(request, run.pk, status.HTTP_201_CREATED)


@listed(page=s.PaginatedRequests, operation_id="requests_list")
class RequestListView(ListAPIView):
    query, rows = s.RequestFilter, s.RequestSerializer

    def items(self, *, request: Request, filters: dict[str, Any]) -> QuerySet[Any]:
        return selectors.filter_requests(selectors.visible_requests(request.user), **filters)

    @extend_schema(
        request=s.AccountRequestInput,
        responses={201: s.RequestDecidedSerializer, **ACTION_ERRORS},
        operation_id="requests_create",
    )
    def post(self, request: Request) -> Response:
        """Request an account (same body as POST accounts/); answers the request."""
        _account, req = _create_request(request)
        return _request_response(request, req.pk, status.HTTP_201_CREATED)


def _request_response(
    request: Request, request_id: int, code: int = status.HTTP_200_OK
) -> Response:
    req = selectors.visible_requests(request.user).get(pk=request_id)
    run = selectors.latest_run(req.account)
    req.run = run.pk if run else None  # type: ignore[attr-defined]
    return Response(s.RequestDecidedSerializer(req).data, status=code)


class _RequestDecisionView(PortalAPIView):
    """POST a decision on a pending request; subclasses say which and with what body."""

    input_serializer: type[Serializer] = s.CommentInput

    def decide(self, *, account_request: AccountRequest, user: User, comment: str) -> None:
        raise NotImplementedError

    def post(self, request: Request, request_id: int) -> Response:
        req = lookups.visible_request(user=request.user, request_id=request_id)
        if not permissions.can_decide(request.user):
            raise PermissionDenied("only approvers may decide requests")
        body = _valid(self.input_serializer, request.data)
        self.decide(account_request=req, user=acting_user(request), comment=body["comment"])
        return _request_response(request, req.pk)


class RequestApproveView(_RequestDecisionView):
    input_serializer = s.CommentInput

    def decide(self, *, account_request: AccountRequest, user: User, comment: str) -> None:
        services.approve_request(account_request=account_request, user=user, comment=comment)

    @extend_schema(
        request=s.CommentInput, responses={200: s.RequestDecidedSerializer, **ACTION_ERRORS}
    )
    def post(self, request: Request, request_id: int) -> Response:
        """Approve a pending request (not your own); its provision run starts."""
        return super().post(request, request_id)


class RequestRejectView(_RequestDecisionView):
    input_serializer = s.RejectInput

    def decide(self, *, account_request: AccountRequest, user: User, comment: str) -> None:
        services.reject_request(account_request=account_request, user=user, comment=comment)

    @extend_schema(
        request=s.RejectInput, responses={200: s.RequestDecidedSerializer, **ACTION_ERRORS}
    )
    def post(self, request: Request, request_id: int) -> Response:
        """Reject a pending request (a comment is required); the account is rejected."""
        return super().post(request, request_id)


class RequestWithdrawView(PortalAPIView):
    @extend_schema(request=None, responses={200: s.RequestDecidedSerializer, **ACTION_ERRORS})
    def post(self, request: Request, request_id: int) -> Response:
        """Withdraw your pending request; its account, never built, is kept as withdrawn."""
        req = lookups.own_request(user=request.user, request_id=request_id)
        request_actions.withdraw_request(account_request=req, user=acting_user(request))
        return _request_response(request, req.pk)


class RequestResubmitView(PortalAPIView):
    @extend_schema(
        request=s.ResubmitInput, responses={201: s.RequestDecidedSerializer, **ACTION_ERRORS}
    )
    def post(self, request: Request, request_id: int) -> Response:
        """Send your rejected request again, its config edited: a new pending request."""
        req = lookups.own_request(user=request.user, request_id=request_id)
        body = _valid(s.ResubmitInput, request.data)
        again = request_actions.resubmit_request(
            account_request=req,
            user=acting_user(request),
            config=body.get("config"),
            reason=body["reason"],
        )
        return _request_response(request, again.pk, status.HTTP_201_CREATED)


# --- runs ---------------------------------------------------------------------------------------


@listed(
    page=s.PaginatedRuns,
    operation_id="runs_list",
    description="Runs across the accounts you may see, newest first.",
)
class RunListView(ListAPIView):
    query, rows = s.RunFilter, s.RunListSerializer

    def items(self, *, request: Request, filters: dict[str, Any]) -> QuerySet[Any]:
        return selectors.filter_runs(selectors.visible_runs(request.user), **filters)


class RunResumeView(PortalAPIView):
    @extend_schema(request=None, responses={200: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, run_id: int) -> Response:
        """Go on with a run stopped before a stage ran, from its first unfinished stage."""
        run = lookups.visible_run(user=request.user, run_id=run_id)
        if not permissions.can_retry(user=request.user, run=run):
            raise PermissionDenied("only admins may resume runs")
        run_services.resume_run(run, user=acting_user(request))
        return _run_response(request, run.pk)


class RunDetailView(PortalAPIView):
    @extend_schema(responses={200: s.RunSerializer, 404: NOT_FOUND})
    def get(self, request: Request, run_id: int) -> Response:
        return _run_response(request, run_id)


class StageLogView(PortalAPIView):
    @extend_schema(
        parameters=[s.LogQuery],
        responses={
            200: s.LogOutput,
            400: OpenApiResponse(description="Bad `after`."),
            404: NOT_FOUND,
        },
    )
    def get(self, request: Request, run_id: int, stage_id: int) -> Response:
        """The stage's log lines numbered above ``after`` (at most 500 at a time)."""
        _run, stage = lookups.visible_stage(user=request.user, run_id=run_id, stage_id=stage_id)
        after = _valid(s.LogQuery, request.query_params)["after"]
        # The status first: lines written before a final status are then all there.
        final = stage.status in FINISHED_STAGE_STATUSES
        lines = log_after(stage=stage, after=after, limit=LOG_PAGE_SIZE + 1)
        more = len(lines) > LOG_PAGE_SIZE
        lines = lines[:LOG_PAGE_SIZE]
        data = {
            "lines": lines,
            "next": lines[-1].number if lines else after,
            "finished": final and not more,
        }
        return Response(s.LogOutput(data).data)


class RunCancelView(PortalAPIView):
    @extend_schema(request=None, responses={200: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, run_id: int) -> Response:
        run = lookups.visible_run(user=request.user, run_id=run_id)
        if not permissions.can_cancel(user=request.user, run=run):
            raise PermissionDenied("only admins and whoever started the run may cancel it")
        run_services.cancel_run(run, user=acting_user(request))
        return _run_response(request, run.pk)


class _StageActionView(PortalAPIView):
    """POST an action on one stage of a visible run; answers the run as it is then."""

    input_serializer: type[Serializer] | None = None
    forbidden = "not allowed"  # the 403's message

    def allowed(self, *, user: Who, run: PipelineRun) -> bool:
        raise NotImplementedError

    def act(self, *, stage: StageRun, user: User, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        run, stage = lookups.visible_stage(user=request.user, run_id=run_id, stage_id=stage_id)
        if not self.allowed(user=request.user, run=run):
            raise PermissionDenied(self.forbidden)
        body = _valid(self.input_serializer, request.data) if self.input_serializer else {}
        self.act(stage=stage, user=acting_user(request), body=body)
        return _run_response(request, run.pk)


class StageRetryView(_StageActionView):
    forbidden = "only admins may retry stages"

    def allowed(self, *, user: Who, run: PipelineRun) -> bool:
        return permissions.can_retry(user=user, run=run)

    def act(self, *, stage: StageRun, user: User, body: dict[str, Any]) -> None:
        run_services.retry_stage(stage, user=user)

    @extend_schema(request=None, responses={200: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        """Retry a failed (or cancelled) stage; the run goes on from there."""
        return super().post(request, run_id, stage_id)


class _StageDecisionView(_StageActionView):
    approve = True
    forbidden = "only approvers may decide plans"

    def allowed(self, *, user: Who, run: PipelineRun) -> bool:
        return permissions.can_decide(user)

    def act(self, *, stage: StageRun, user: User, body: dict[str, Any]) -> None:
        run_services.decide_stage(stage, user=user, approve=self.approve, comment=body["comment"])


class StageApproveView(_StageDecisionView):
    approve = True
    input_serializer = s.CommentInput

    @extend_schema(request=s.CommentInput, responses={200: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        """Approve a plan waiting for approval (not of a run you started); apply goes on."""
        return super().post(request, run_id, stage_id)


class StageRejectView(_StageDecisionView):
    approve = False
    input_serializer = s.RejectInput

    @extend_schema(request=s.RejectInput, responses={200: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        """Reject a plan (a comment is required); the run fails and can be retried."""
        return super().post(request, run_id, stage_id)
