"""API serializers of expiry extensions, exemptions and drift reports."""

from __future__ import annotations

from rest_framework import serializers

from accounts_app.api.serializers import MAX_INT, AccountBriefSerializer, paginated
from accounts_app.models import DriftReport, ExtensionRequest, RequestStatus


class ExtendInput(serializers.Serializer):
    expires_at = serializers.DateTimeField(
        help_text="The new expiry, later than the current one. Up to the purpose's "
        "max_ttl_days from the account's creation it applies at once; later, an approver "
        "decides."
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class ExemptInput(serializers.Serializer):
    exempt = serializers.BooleanField(help_text="true: the account never expires.")


class ExtensionFilter(serializers.Serializer):
    status = serializers.ChoiceField(choices=RequestStatus.choices, required=False)
    account = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT)


class ExtensionSerializer(serializers.ModelSerializer):
    account = AccountBriefSerializer()
    requested_by = serializers.CharField(source="requested_by.username")
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True)
    account_expires_at = serializers.DateTimeField(
        source="account.expires_at", allow_null=True, help_text="The account's expiry now."
    )

    class Meta:
        model = ExtensionRequest
        fields = [
            "id",
            "status",
            "account",
            "requested_by",
            "previous_expires_at",
            "expires_at",
            "account_expires_at",
            "reason",
            "decided_by",
            "decided_at",
            "comment",
            "created_at",
        ]


class DriftResourceSerializer(serializers.Serializer):
    address = serializers.CharField()
    action = serializers.CharField()


class DriftSummarySerializer(serializers.Serializer):
    add = serializers.IntegerField()
    change = serializers.IntegerField()
    replace = serializers.IntegerField()
    destroy = serializers.IntegerField()
    has_changes = serializers.BooleanField()
    resources = DriftResourceSerializer(many=True)
    output_changes = serializers.ListField(child=serializers.CharField())


class DriftReportSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="run_id")
    summary = DriftSummarySerializer()

    class Meta:
        model = DriftReport
        fields = ["id", "run", "checked_at", "drifted", "summary"]


class DriftStatusSerializer(serializers.Serializer):
    drifted = serializers.BooleanField(
        help_text="The latest check found drift and no update has applied since."
    )
    latest = DriftReportSerializer(allow_null=True)


PaginatedExtensions = paginated(ExtensionSerializer)
