"""API input and output serializers. Inputs check types only; services check meaning."""

from __future__ import annotations

import json
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts_app import selectors
from accounts_app.models import Account, AccountRequest, AccountStatus, Purpose, RequestStatus
from accounts_app.services import USER_RUN_KINDS
from accounts_app.updates import FileChange
from pipelines.blueprints import Blueprint
from pipelines.models import PipelineRun, RunKind, RunStatus, StageRun, StageStatus
from pipelines.selectors import latest_plan

# The whole name, as the request service matches it (re.fullmatch).
ACCOUNT_NAME_PATTERN = r"\A[a-z][a-z0-9-]{2,39}\Z"
# The largest value a PostgreSQL integer column holds (log line numbers).
MAX_INT = 2_147_483_647
# An account name as the request service checks it (whole string); ECMA-262 `$`, as
# OpenAPI patterns are, matches only at the very end.
ACCOUNT_NAME_RULE = (
    "3 to 40 characters: a lower-case letter, then lower-case letters, digits and dashes"
)
ACCOUNT_NAME_SCHEMA = {
    "type": "string",
    "pattern": "^[a-z][a-z0-9-]{2,39}$",
    "minLength": 3,
    "maxLength": 40,
    "description": f"{ACCOUNT_NAME_RULE}.",
}

# --- inputs -------------------------------------------------------------------------------


@extend_schema_field(ACCOUNT_NAME_SCHEMA)
class AccountNameField(serializers.Field):
    """A string, checked against the rule by the request service with the other fields,
    so that every problem comes back at once; the schema states the rule."""

    default_error_messages = {"invalid": "must be a string"}

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return data

    def to_representation(self, value: str) -> str:
        return value


class AccountRequestInput(serializers.Serializer):
    name = AccountNameField()
    blueprint = serializers.ChoiceField(
        choices=[], help_text="One of the blueprints GET blueprints/ lists."
    )
    purpose = serializers.ChoiceField(choices=Purpose.choices)
    config = serializers.DictField(
        child=serializers.JSONField(),
        allow_empty=True,
        help_text="Values for the blueprint's parameters (a JSON Schema: GET blueprints/{name}/).",
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="In the future, and within the blueprint policy's max_ttl_days for the "
        "purpose; left out: the policy's default_ttl_days.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The blueprints are data: read them when a request (or the schema) is made.
        blueprint = self.fields["blueprint"]
        assert isinstance(blueprint, serializers.ChoiceField)
        blueprint.choices = [b.name for b in selectors.usable_blueprints()]


class PageQuery(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=500, help_text="Items per page (at most 500)."
    )
    offset = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_INT, help_text="Items to skip."
    )


class RenderInput(serializers.Serializer):
    config = serializers.DictField(child=serializers.JSONField(), allow_empty=True)
    name = AccountNameField(
        required=False,
        default="preview-account",
        validators=[RegexValidator(ACCOUNT_NAME_PATTERN, ACCOUNT_NAME_RULE)],
    )
    purpose = serializers.ChoiceField(choices=Purpose.choices, required=False, default=Purpose.DEMO)


class RunInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=list(USER_RUN_KINDS))
    # A teardown only: the account's name typed again, and why (kept with the account).
    confirm = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class CommentInput(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class RejectInput(serializers.Serializer):
    comment = serializers.CharField(max_length=5000)


class AccountFilter(serializers.Serializer):
    status = serializers.ChoiceField(choices=AccountStatus.choices, required=False)
    purpose = serializers.ChoiceField(choices=Purpose.choices, required=False)
    owner = serializers.CharField(required=False, max_length=150, help_text="A username.")


class RequestFilter(serializers.Serializer):
    status = serializers.ChoiceField(choices=RequestStatus.choices, required=False)
    purpose = serializers.ChoiceField(choices=Purpose.choices, required=False)
    owner = serializers.CharField(required=False, max_length=150, help_text="A username.")


class RunFilter(serializers.Serializer):
    account = serializers.CharField(
        required=False, max_length=40, help_text="An account's id or name."
    )
    kind = serializers.ChoiceField(choices=RunKind.choices, required=False)
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    since = serializers.DateTimeField(
        required=False, help_text="Runs started at or after this time (ISO 8601)."
    )


class ResubmitInput(serializers.Serializer):
    config = serializers.DictField(
        child=serializers.JSONField(),
        allow_empty=True,
        required=False,
        help_text="The edited config (left out: the rejected request's).",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class LogQuery(serializers.Serializer):
    after = serializers.IntegerField(required=False, default=0, min_value=0, max_value=MAX_INT)


# --- outputs -------------------------------------------------------------------------------


class PolicySerializer(serializers.Serializer):
    auto_approve = serializers.ListField(child=serializers.CharField())
    default_ttl_days = serializers.IntegerField(allow_null=True)
    max_ttl_days = serializers.IntegerField(allow_null=True)
    max_active_per_user = serializers.IntegerField(allow_null=True)


class BlueprintSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    version = serializers.CharField()
    stages = serializers.ListField(child=serializers.CharField())
    approval_plan = serializers.CharField()
    policy = serializers.SerializerMethodField()

    @extend_schema_field(serializers.DictField(child=PolicySerializer()))
    def get_policy(self, blueprint: Blueprint) -> dict[str, Any]:
        return {
            purpose: PolicySerializer(policy).data for purpose, policy in blueprint.policy.items()
        }


class BlueprintDetailSerializer(BlueprintSerializer):
    parameters = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_parameters(self, blueprint: Blueprint) -> dict[str, Any]:
        """The blueprint's parameters as a JSON Schema."""
        return blueprint.parameters


class RenderedFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    sha256 = serializers.CharField()
    content = serializers.CharField()


class RenderOutput(serializers.Serializer):
    files = RenderedFileSerializer(many=True)


class RequestBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=RequestStatus.choices)


class RunBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = PipelineRun
        fields = ["id", "kind", "status", "trigger", "created_at", "finished_at"]


class AccountSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")

    class Meta:
        model = Account
        fields = [
            "id",
            "name",
            "blueprint",
            "purpose",
            "status",
            "owner",
            "expires_at",
            "expiry_exempt",
            "protected",
            "cloud_account_id",
            "created_at",
            "updated_at",
        ]


class AccountCreatedSerializer(AccountSerializer):
    request = RequestBriefSerializer()
    run = serializers.IntegerField(
        allow_null=True, help_text="The provision run, when the request was auto-approved."
    )

    class Meta(AccountSerializer.Meta):
        fields = [*AccountSerializer.Meta.fields, "request", "run"]


class OutputValueSerializer(serializers.Serializer):
    value = serializers.JSONField(allow_null=True, help_text="null when sensitive")
    sensitive = serializers.BooleanField()
    type = serializers.JSONField(allow_null=True)


class PlanResourceSerializer(serializers.Serializer):
    address = serializers.CharField()
    action = serializers.CharField()


class PlanSummarySerializer(serializers.Serializer):
    run = serializers.IntegerField()
    stage = serializers.IntegerField()
    finished_at = serializers.DateTimeField(allow_null=True)
    add = serializers.IntegerField()
    change = serializers.IntegerField()
    replace = serializers.IntegerField(required=False)
    destroy = serializers.IntegerField()
    has_changes = serializers.BooleanField(required=False)
    resources = PlanResourceSerializer(many=True, required=False)
    output_changes = serializers.ListField(child=serializers.CharField(), required=False)


class AccountDetailSerializer(AccountSerializer):
    config = serializers.JSONField()
    outputs = serializers.SerializerMethodField()
    endpoints = serializers.JSONField()
    runs = RunBriefSerializer(many=True)
    request = serializers.SerializerMethodField()
    latest_plan = serializers.SerializerMethodField()

    class Meta(AccountSerializer.Meta):
        fields = [
            *AccountSerializer.Meta.fields,
            "config",
            "outputs",
            "endpoints",
            "runs",
            "request",
            "latest_plan",
            "follow_problem",
        ]

    @extend_schema_field(serializers.DictField(child=OutputValueSerializer()))
    def get_outputs(self, account: Account) -> dict[str, Any]:
        return selectors.public_outputs(account)

    @extend_schema_field(RequestBriefSerializer(allow_null=True))
    def get_request(self, account: Account) -> dict[str, Any] | None:
        requests = list(account.requests.all())  # prefetched, newest first
        return RequestBriefSerializer(requests[0]).data if requests else None

    @extend_schema_field(PlanSummarySerializer(allow_null=True))
    def get_latest_plan(self, account: Account) -> dict[str, Any] | None:
        found = latest_plan(account.pk)
        if found is None:
            return None
        stage, summary = found
        return PlanSummarySerializer(
            {
                "run": stage.run_id,
                "stage": stage.pk,
                "finished_at": stage.finished_at,
                **summary.to_dict(),
            }
        ).data


class StageSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=StageStatus.choices)
    outputs = serializers.JSONField()

    class Meta:
        model = StageRun
        fields = [
            "id",
            "kind",
            "position",
            "status",
            "attempt",
            "started_at",
            "finished_at",
            "explanation",
            "outputs",
            "retryable",
            "approval_deadline",
            "duration_seconds",
        ]

    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)


class RunSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=RunStatus.choices)
    account = serializers.IntegerField(source="account_id")
    stages = StageSerializer(many=True)

    class Meta:
        model = PipelineRun
        fields = [
            "id",
            "kind",
            "status",
            "trigger",
            "trigger_detail",
            "account",
            "explanation",
            "created_at",
            "finished_at",
            "duration_seconds",
            "stages",
        ]

    duration_seconds = serializers.FloatField(read_only=True)


class RunListSerializer(serializers.ModelSerializer):
    """A run in a list: no stages, with its account's name and who started it."""

    status = serializers.ChoiceField(choices=RunStatus.choices)
    account = serializers.IntegerField(source="account_id")
    account_name = serializers.CharField(source="account.name")
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    duration_seconds = serializers.FloatField(read_only=True)

    class Meta:
        model = PipelineRun
        fields = [
            "id",
            "kind",
            "status",
            "trigger",
            "account",
            "account_name",
            "created_by",
            "explanation",
            "created_at",
            "finished_at",
            "duration_seconds",
        ]


class LogLineSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    time = serializers.DateTimeField()
    text = serializers.CharField(allow_blank=True)


class LogOutput(serializers.Serializer):
    lines = LogLineSerializer(many=True)
    next = serializers.IntegerField()
    finished = serializers.BooleanField()


class AccountBriefSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")

    class Meta:
        model = Account
        fields = ["id", "name", "blueprint", "status", "owner"]


class RequestSerializer(serializers.ModelSerializer):
    account = AccountBriefSerializer()
    requested_by = serializers.CharField(source="requested_by.username")
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True)
    config = serializers.JSONField()

    class Meta:
        model = AccountRequest
        fields = [
            "id",
            "status",
            "account",
            "requested_by",
            "purpose",
            "expires_at",
            "reason",
            "config",
            "decided_by",
            "decided_at",
            "comment",
            "created_at",
        ]


class RequestDecidedSerializer(RequestSerializer):
    run = serializers.IntegerField(allow_null=True, help_text="The provision run, once approved.")

    class Meta(RequestSerializer.Meta):
        fields = [*RequestSerializer.Meta.fields, "run"]


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    holder = serializers.IntegerField(required=False, help_text="The active run holding the lock.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


def paginated(item: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The page LimitOffsetPagination answers: count, next, previous, results."""
    name = item.__name__.removesuffix("Serializer")
    return type(
        f"Paginated{name}List",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item(many=True),
        },
    )


PaginatedBlueprints = paginated(BlueprintSerializer)
PaginatedAccounts = paginated(AccountSerializer)
PaginatedRequests = paginated(RequestSerializer)
PaginatedRuns = paginated(RunListSerializer)


# --- production registration and parity reports ----------------------------------------------


class ProductionInput(serializers.Serializer):
    """POST accounts/ with purpose production (admins): register production as it is."""

    name = serializers.CharField(max_length=40)
    blueprint = serializers.CharField(max_length=64)
    purpose = serializers.ChoiceField(choices=[Purpose.PRODUCTION])
    config = serializers.DictField(child=serializers.JSONField(), allow_empty=True)
    state = serializers.JSONField(
        required=False, default=None, help_text="The output of `terraform show -json`."
    )
    cloud_account_id = serializers.CharField(
        required=False, allow_blank=True, max_length=32, default=""
    )


class ParityQuery(serializers.Serializer):
    recompute = serializers.BooleanField(
        required=False, default=False, help_text="Compute the report now rather than the latest."
    )


class ParityCheckSerializer(serializers.Serializer):
    path = serializers.CharField()
    status = serializers.ChoiceField(choices=["equal", "differs", "allowed"])
    clone = serializers.JSONField(allow_null=True)
    production = serializers.JSONField(allow_null=True)
    rule = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)


class ParityVersionsSerializer(serializers.Serializer):
    clone = serializers.CharField(allow_null=True)
    production = serializers.CharField(allow_null=True)


class ParityReportSerializer(serializers.Serializer):
    """The report object, as ``account_parity --json`` prints it (documentation only)."""

    account = serializers.CharField()
    production = serializers.CharField()
    purpose = serializers.CharField()
    in_parity = serializers.BooleanField()
    checks = ParityCheckSerializer(many=True)
    data_age_hours = serializers.FloatField(allow_null=True)
    blueprint_version = ParityVersionsSerializer()
    checked_at = serializers.DateTimeField()


# --- edits and upgrades ------------------------------------------------------------------------


class UpdateInput(serializers.Serializer):
    """PATCH accounts/{id}/: the account's new config (every parameter, as for a request)."""

    config = serializers.DictField(
        child=serializers.JSONField(),
        allow_empty=True,
        help_text="Values for the blueprint's parameters (a JSON Schema: GET blueprints/{name}/).",
    )


class DiffQuery(serializers.Serializer):
    config = serializers.CharField(
        required=False,
        max_length=65536,
        help_text="The new config as JSON; left out: the account's own config under its "
        "blueprint's current version (the upgrade's diff). A body {config} works too.",
    )

    def validate_config(self, value: str) -> dict[str, Any]:
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise serializers.ValidationError("must be a JSON object of parameter values")
        return parsed


class FileDiffSerializer(serializers.Serializer):
    path = serializers.CharField()
    change = serializers.ChoiceField(choices=[str(change) for change in FileChange])
    diff = serializers.CharField(help_text="Unified diff: applied file (a/), new (b/).")


class DiffSerializer(serializers.Serializer):
    account = serializers.CharField()
    blueprint = serializers.CharField()
    from_version = serializers.CharField(allow_null=True)
    to_version = serializers.CharField()
    base_run = serializers.IntegerField(
        allow_null=True, help_text="The run whose render is applied now (the diff's base)."
    )
    changed = serializers.BooleanField()
    files = FileDiffSerializer(many=True)
    parity_warnings = serializers.ListField(child=serializers.CharField())


class UpdateOutput(serializers.Serializer):
    diff = DiffSerializer()
    run = RunSerializer(allow_null=True, help_text="The update run; null for production.")


class UpgradeResultSerializer(serializers.Serializer):
    account = serializers.CharField()
    run = serializers.IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True)


class UpgradeAllOutput(serializers.Serializer):
    blueprint = serializers.CharField()
    version = serializers.CharField()
    results = UpgradeResultSerializer(many=True)
