"""The API of an account's life after creation: extend, exempt, drift, reconcile.

Thin views over ``accounts_app.expiry`` and ``accounts_app.drift``; who may do what
comes from ``accounts_app.permissions`` (not visible: 404; visible, not allowed: 403).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from accounts_app import drift, expiry, permissions
from accounts_app.api import lifecycle_serializers as ls
from accounts_app.api import serializers as s
from accounts_app.api.views import (
    ACTION_ERRORS,
    NOT_FOUND,
    ListAPIView,
    PortalAPIView,
    _run_response,
    _valid,
    acting_user,
    listed,
)
from accounts_app.models import ExtensionRequest, RequestStatus
from portal import lookups


def _extension_response(extension_id: int, code: int = status.HTTP_200_OK) -> Response:
    extension = ExtensionRequest.objects.select_related(
        "account", "account__owner", "requested_by", "decided_by"
    ).get(pk=extension_id)
    return Response(ls.ExtensionSerializer(extension).data, status=code)


class AccountExtendView(PortalAPIView):
    @extend_schema(
        request=ls.ExtendInput,
        responses={
            200: OpenApiResponse(ls.ExtensionSerializer, description="Extended at once."),
            202: OpenApiResponse(
                ls.ExtensionSerializer, description="Beyond the limit: waits for an approver."
            ),
            **ACTION_ERRORS,
        },
    )
    def post(self, request: Request, account_id: int) -> Response:
        """Extend the account's expiry (owner or admin)."""
        account = lookups.visible_account(user=request.user, account_id=account_id)
        if not permissions.can_start_run(user=request.user, account=account):
            raise PermissionDenied("only the owner or an admin may extend this account")
        body = _valid(ls.ExtendInput, request.data)
        extension = expiry.extend(account=account, user=acting_user(request), **body)
        code = (
            status.HTTP_202_ACCEPTED
            if extension.status == RequestStatus.PENDING
            else status.HTTP_200_OK
        )
        return _extension_response(extension.pk, code)


class AccountExemptView(PortalAPIView):
    @extend_schema(request=ls.ExemptInput, responses={200: s.AccountSerializer, **ACTION_ERRORS})
    def post(self, request: Request, account_id: int) -> Response:
        """Exempt the account from expiry, or end the exemption (admins)."""
        account = lookups.visible_account(user=request.user, account_id=account_id)
        if not permissions.is_admin(request.user):
            raise PermissionDenied("only admins may exempt accounts from expiry")
        body = _valid(ls.ExemptInput, request.data)
        return Response(
            s.AccountSerializer(expiry.set_exempt(account=account, exempt=body["exempt"])).data
        )


@listed(
    page=ls.PaginatedExtensions,
    operation_id="extensions_list",
    description="Extensions of the accounts you may see, newest first.",
)
class ExtensionListView(ListAPIView):
    query, rows = ls.ExtensionFilter, ls.ExtensionSerializer

    def items(self, *, request: Request, filters: dict[str, Any]) -> QuerySet[Any]:
        return expiry.visible_extensions(user=acting_user(request), **filters)


class _ExtensionDecisionView(PortalAPIView):
    approve = True
    input_serializer: type[s.CommentInput] | type[s.RejectInput] = s.CommentInput

    def post(self, request: Request, extension_id: int) -> Response:
        extension = lookups.visible_extension(user=acting_user(request), extension_id=extension_id)
        if not permissions.can_decide(request.user):
            raise PermissionDenied("only approvers may decide extensions")
        body = _valid(self.input_serializer, request.data)
        expiry.decide_extension(
            extension=extension,
            user=acting_user(request),
            approve=self.approve,
            comment=body["comment"],
        )
        return _extension_response(extension.pk)


class ExtensionApproveView(_ExtensionDecisionView):
    approve = True
    input_serializer = s.CommentInput

    @extend_schema(request=s.CommentInput, responses={200: ls.ExtensionSerializer, **ACTION_ERRORS})
    def post(self, request: Request, extension_id: int) -> Response:
        """Approve a pending extension (not your own); the account's expiry moves."""
        return super().post(request, extension_id)


class ExtensionRejectView(_ExtensionDecisionView):
    approve = False
    input_serializer = s.RejectInput

    @extend_schema(request=s.RejectInput, responses={200: ls.ExtensionSerializer, **ACTION_ERRORS})
    def post(self, request: Request, extension_id: int) -> Response:
        """Reject a pending extension (a comment is required); the expiry stays."""
        return super().post(request, extension_id)


class AccountDriftView(PortalAPIView):
    @extend_schema(responses={200: ls.DriftStatusSerializer, 404: NOT_FOUND})
    def get(self, request: Request, account_id: int) -> Response:
        """Whether the account has drifted, and its latest drift check."""
        account = lookups.visible_account(user=request.user, account_id=account_id)
        latest = drift.latest_report(account)
        data = {"drifted": drift.current_drift(account) is not None, "latest": latest}
        return Response(ls.DriftStatusSerializer(data).data)

    @extend_schema(request=None, responses={201: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, account_id: int) -> Response:
        """Check the account for drift now (a drift-check run: render and plan, no apply)."""
        account = lookups.visible_account(user=request.user, account_id=account_id)
        if not permissions.can_start_run(user=request.user, account=account):
            raise PermissionDenied("you may not start runs on this account")
        run = drift.start_check(account=account, user=acting_user(request))
        return _run_response(request, run.pk, status.HTTP_201_CREATED)


class AccountReconcileView(PortalAPIView):
    @extend_schema(request=None, responses={201: s.RunSerializer, **ACTION_ERRORS})
    def post(self, request: Request, account_id: int) -> Response:
        """Reconcile a drifted account: an update run, its plan under the approval policy."""
        account = lookups.visible_account(user=request.user, account_id=account_id)
        if not permissions.can_start_run(user=request.user, account=account):
            raise PermissionDenied("you may not start runs on this account")
        run = drift.reconcile(account=account, user=acting_user(request))
        return _run_response(request, run.pk, status.HTTP_201_CREATED)
