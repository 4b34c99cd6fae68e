"""The REST API: thin views over accounts_app and pipelines services and selectors.

Who may do what comes from accounts_app.permissions: what a user may not see
answers 404, what they may see but not do answers 403. State errors (a run
already active, a request already decided) answer 409 with ``detail``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from accounts_app import permissions, selectors, services
from accounts_app.api import serializers as s
from accounts_app.models import Account, AccountRequest
from pipelines import services as run_services
from pipelines.blueprints import Blueprint, BlueprintError, ConfigInvalid, load_blueprint
from pipelines.models import FINISHED_STAGE_STATUSES, PipelineRun, StageRun
from pipelines.rendering import RenderError, render_blueprint
from pipelines.selectors import LOG_PAGE_SIZE, log_after
from pipelines.stages.render import template_context


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class PortalAPIView(APIView):
    # Token first, so an anonymous caller gets 401 with a WWW-Authenticate header.
    authentication_classes = [TokenAuthentication, SessionAuthentication]

    def paginate(self, request: Request, items: Any, serializer: type[Serializer]) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(items, request, view=self)
        return paginator.get_paginated_response(serializer(page, many=True).data)


def _query(serializer: type[Serializer], request: Request) -> dict[str, Any]:
    query = serializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return dict(query.validated_data)


def _body(serializer: type[Serializer], request: Request) -> dict[str, Any]:
    body = serializer(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _conflict(exc: Exception) -> Response:
    data: dict[str, Any] = {"detail": str(exc)}
    holder = getattr(exc, "holder_id", None)
    if holder:
        data["holder"] = holder
    return Response(data, status=status.HTTP_409_CONFLICT)


def _request_invalid(exc: services.RequestInvalid) -> ValidationError:
    return ValidationError(exc.errors)


def _blueprint_or_404(name: str) -> Blueprint:
    try:
        return load_blueprint(name)
    except BlueprintError:
        raise Http404("no such blueprint") from None


def _visible_run(request: Request, run_id: int) -> PipelineRun:
    run = selectors.run_with_stages(request.user, run_id)
    if run is None:
        raise Http404("no such run")
    return run


def _stage_of(run: PipelineRun, stage_id: int) -> StageRun:
    for stage in run.stages.all():  # prefetched
        if stage.pk == stage_id:
            return stage
    raise Http404("no such stage in this run")


def _visible_request(request: Request, request_id: int) -> AccountRequest:
    found = selectors.visible_requests(request.user).filter(pk=request_id).first()
    if found is None:
        raise Http404("no such request")
    return found


def _run_response(run_id: int, request: Request, code: int = status.HTTP_200_OK) -> Response:
    run = _visible_run(request, run_id)
    return Response(s.RunSerializer(run).data, status=code)


PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="Items per page (at most 500)."),
    OpenApiParameter("offset", int, description="Items to skip."),
]
LIST_ERRORS = {400: OpenApiResponse(description="A filter has a bad value.")}
NOT_FOUND = OpenApiResponse(s.ErrorSerializer, description="Not found, or not yours.")
FORBIDDEN = OpenApiResponse(s.ErrorSerializer, description="Not allowed for your role.")
CONFLICT = OpenApiResponse(s.ConflictSerializer, description="Does not fit the current state.")


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([AllowAny])
def not_found(request: Request) -> Response:
    return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)


# --- blueprints ------------------------------------------------------------------------------


class BlueprintListView(PortalAPIView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses=s.PaginatedBlueprints,
        operation_id="blueprints_list",
    )
    def get(self, request: Request) -> Response:
        return self.paginate(request, selectors.usable_blueprints(), s.BlueprintSerializer)


class BlueprintDetailView(PortalAPIView):
    @extend_schema(responses={200: s.BlueprintDetailSerializer, 404: NOT_FOUND})
    def get(self, request: Request, name: str) -> Response:
        return Response(s.BlueprintDetailSerializer(_blueprint_or_404(name)).data)


class BlueprintRenderView(PortalAPIView):
    @extend_schema(
        request=s.RenderInput,
        responses={
            200: s.RenderOutput,
            400: OpenApiResponse(description="Bad config."),
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    def post(self, request: Request, name: str) -> Response:
        """Preview the Terraform files a config renders to; nothing is stored."""
        if not permissions.can_request(request.user):
            raise PermissionDenied("only requesters may preview blueprints")
        blueprint = _blueprint_or_404(name)
        body = _body(s.RenderInput, request)
        try:
            config = blueprint.validate_config(body["config"])
        except ConfigInvalid as exc:
            raise ValidationError({"config": [str(p) for p in exc.problems]}) from None
        context = template_context(
            blueprint, config, account_name=body["name"], purpose=body["purpose"]
        )
        try:
            result = render_blueprint(blueprint.terraform_dir, context, None)
        except RenderError as exc:
            raise ValidationError({"config": [str(exc)]}) from None
        files = [
            {
                "path": path,
                "sha256": hashlib.sha256(data).hexdigest(),
                "content": data.decode("utf-8", errors="replace"),
            }
            for path, data in result.files.items()
        ]
        return Response(s.RenderOutput({"files": files}).data)


# --- accounts and requests ---------------------------------------------------------------------


def _create_request(request: Request) -> tuple[Account, AccountRequest]:
    if not permissions.can_request(request.user):
        raise PermissionDenied("only requesters may request accounts")
    body = _body(s.AccountRequestInput, request)
    try:
        return services.request_account(user=request.user, **body)  # type: ignore[arg-type]
    except services.RequestInvalid as exc:
        raise _request_invalid(exc) from None


class AccountListView(PortalAPIView):
    @extend_schema(
        parameters=[s.AccountFilter, *PAGE_PARAMETERS],
        responses={200: s.PaginatedAccounts, **LIST_ERRORS},
        operation_id="accounts_list",
    )
    def get(self, request: Request) -> Response:
        filters = _query(s.AccountFilter, request)
        accounts = selectors.filter_accounts(selectors.visible_accounts(request.user), **filters)
        return self.paginate(request, accounts, s.AccountSerializer)

    @extend_schema(
        request=s.AccountRequestInput,
        responses={
            201: s.AccountCreatedSerializer,
            400: OpenApiResponse(description="Invalid."),
            403: FORBIDDEN,
            409: CONFLICT,
        },
        operation_id="accounts_create",
    )
    def post(self, request: Request) -> Response:
        """Request an account; an auto-approved request starts its provision run at once."""
        try:
            account, req = _create_request(request)
        except services.RequestRefused as exc:
            return _conflict(exc)
        run = account.runs.order_by("-created_at", "-id").first()
        account.request = req  # type: ignore[attr-defined]
        account.run = run.pk if run else None  # type: ignore[attr-defined]
        return Response(s.AccountCreatedSerializer(account).data, status=status.HTTP_201_CREATED)


class AccountDetailView(PortalAPIView):
    @extend_schema(responses={200: s.AccountDetailSerializer, 404: NOT_FOUND})
    def get(self, request: Request, account_id: int) -> Response:
        account = selectors.account_with_runs(request.user, account_id)
        if account is None:
            raise Http404("no such account")
        return Response(s.AccountDetailSerializer(account).data)


class AccountRunsView(PortalAPIView):
    @extend_schema(
        request=s.RunInput,
        responses={
            201: s.RunSerializer,
            400: OpenApiResponse(description="Invalid."),
            403: FORBIDDEN,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    )
    def post(self, request: Request, account_id: int) -> Response:
        """Start a provision or update run; 409 names the active run holding the account."""
        account = selectors.visible_accounts(request.user).filter(pk=account_id).first()
        if account is None:
            raise Http404("no such account")
        if not permissions.can_start_run(request.user, account):
            raise PermissionDenied("you may not start runs on this account")
        body = _body(s.RunInput, request)
        try:
            run = services.start_account_run(account, body["kind"], user=request.user)  # type: ignore[arg-type]
        except (services.RequestRefused, run_services.RunRefused) as exc:
            return _conflict(exc)
        return _run_response(run.pk, request, status.HTTP_201_CREATED)


class RequestListView(PortalAPIView):
    @extend_schema(
        parameters=[s.RequestFilter, *PAGE_PARAMETERS],
        responses={200: s.PaginatedRequests, **LIST_ERRORS},
        operation_id="requests_list",
    )
    def get(self, request: Request) -> Response:
        filters = _query(s.RequestFilter, request)
        requests = selectors.filter_requests(selectors.visible_requests(request.user), **filters)
        return self.paginate(request, requests, s.RequestSerializer)

    @extend_schema(
        request=s.AccountRequestInput,
        responses={
            201: s.RequestDecidedSerializer,
            400: OpenApiResponse(description="Invalid."),
            403: FORBIDDEN,
            409: CONFLICT,
        },
        operation_id="requests_create",
    )
    def post(self, request: Request) -> Response:
        """Request an account (same body as POST accounts/); answers the request."""
        try:
            _account, req = _create_request(request)
        except services.RequestRefused as exc:
            return _conflict(exc)
        return _request_response(request, req, status.HTTP_201_CREATED)


def _request_response(
    request: Request, req: AccountRequest, code: int = status.HTTP_200_OK
) -> Response:
    req = selectors.visible_requests(request.user).get(pk=req.pk)
    run = req.account.runs.order_by("-created_at", "-id").first()
    req.run = run.pk if run else None  # type: ignore[attr-defined]
    return Response(s.RequestDecidedSerializer(req).data, status=code)


class RequestApproveView(PortalAPIView):
    @extend_schema(
        request=s.CommentInput,
        responses={
            200: s.RequestDecidedSerializer,
            400: OpenApiResponse(description="Invalid."),
            403: FORBIDDEN,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    )
    def post(self, request: Request, request_id: int) -> Response:
        req = _visible_request(request, request_id)
        if not permissions.can_decide(request.user):
            raise PermissionDenied("only approvers may decide requests")
        body = _body(s.CommentInput, request)
        try:
            services.approve_request(req, user=request.user, comment=body["comment"])  # type: ignore[arg-type]
        except services.RequestRefused as exc:
            return _conflict(exc)
        return _request_response(request, req)


class RequestRejectView(PortalAPIView):
    @extend_schema(
        request=s.RejectInput,
        responses={
            200: s.RequestDecidedSerializer,
            400: OpenApiResponse(description="Invalid."),
            403: FORBIDDEN,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    )
    def post(self, request: Request, request_id: int) -> Response:
        req = _visible_request(request, request_id)
        if not permissions.can_decide(request.user):
            raise PermissionDenied("only approvers may decide requests")
        body = _body(s.RejectInput, request)
        try:
            services.reject_request(req, user=request.user, comment=body["comment"])  # type: ignore[arg-type]
        except services.RequestInvalid as exc:
            raise _request_invalid(exc) from None
        except services.RequestRefused as exc:
            return _conflict(exc)
        return _request_response(request, req)


# --- runs ---------------------------------------------------------------------------------------


class RunDetailView(PortalAPIView):
    @extend_schema(responses={200: s.RunSerializer, 404: NOT_FOUND})
    def get(self, request: Request, run_id: int) -> Response:
        return Response(s.RunSerializer(_visible_run(request, run_id)).data)


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
        stage = _stage_of(_visible_run(request, run_id), stage_id)
        after = _query(s.LogQuery, request)["after"]
        # The status first: lines written before a final status are then all there.
        final = stage.status in FINISHED_STAGE_STATUSES
        lines = log_after(stage, after, limit=LOG_PAGE_SIZE + 1)
        more = len(lines) > LOG_PAGE_SIZE
        lines = lines[:LOG_PAGE_SIZE]
        data = {
            "lines": lines,
            "next": lines[-1].number if lines else after,
            "finished": final and not more,
        }
        return Response(s.LogOutput(data).data)


class StageRetryView(PortalAPIView):
    @extend_schema(
        request=None,
        responses={200: s.RunSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        run = _visible_run(request, run_id)
        stage = _stage_of(run, stage_id)
        if not permissions.can_retry(request.user, run):
            raise PermissionDenied("only admins may retry stages")
        try:
            run_services.retry_stage(stage, user=request.user)  # type: ignore[arg-type]
        except run_services.RunRefused as exc:
            return _conflict(exc)
        return _run_response(run.pk, request)


class RunCancelView(PortalAPIView):
    @extend_schema(
        request=None,
        responses={200: s.RunSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = _visible_run(request, run_id)
        if not permissions.can_cancel(request.user, run):
            raise PermissionDenied("only admins may cancel runs")
        try:
            run_services.cancel_run(run, user=request.user)  # type: ignore[arg-type]
        except run_services.RunRefused as exc:
            return _conflict(exc)
        return _run_response(run.pk, request)


class _StageDecisionView(PortalAPIView):
    approve = True
    input_serializer: type[Serializer] = s.CommentInput

    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        run = _visible_run(request, run_id)
        stage = _stage_of(run, stage_id)
        if not permissions.can_decide(request.user):
            raise PermissionDenied("only approvers may decide plans")
        body = _body(self.input_serializer, request)
        try:
            run_services.decide_stage(
                stage,
                user=request.user,  # type: ignore[arg-type]
                approve=self.approve,
                comment=body["comment"],
            )
        except run_services.RunRefused as exc:
            return _conflict(exc)
        return _run_response(run.pk, request)


DECISION_RESPONSES = {
    200: s.RunSerializer,
    400: OpenApiResponse(description="Invalid."),
    403: FORBIDDEN,
    404: NOT_FOUND,
    409: CONFLICT,
}


class StageApproveView(_StageDecisionView):
    approve = True
    input_serializer = s.CommentInput

    @extend_schema(request=s.CommentInput, responses=DECISION_RESPONSES)
    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        """Approve a plan waiting for approval; the run goes on to apply."""
        return super().post(request, run_id, stage_id)


class StageRejectView(_StageDecisionView):
    approve = False
    input_serializer = s.RejectInput

    @extend_schema(request=s.RejectInput, responses=DECISION_RESPONSES)
    def post(self, request: Request, run_id: int, stage_id: int) -> Response:
        """Reject a plan (a comment is required); the run fails and can be retried."""
        return super().post(request, run_id, stage_id)
