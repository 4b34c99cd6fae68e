"""The request form: name, purpose, expiry and reason, around the config form generated from
the blueprint's schema; and production's values that lock or prefill its fields."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from accounts_app import policies
from accounts_app.forms.schema_form import FieldLock, child_path
from accounts_app.models import Purpose
from accounts_app.parity import ProductionValues
from pipelines.blueprints import Blueprint

PURPOSE_LABELS = [(str(value), str(label)) for value, label in Purpose.choices]
PURPOSE_CHANGED = "purpose_changed"  # the submit button that redraws the form for a purpose


def expiry_bounds(
    *, blueprint: Blueprint, purpose: str, today: date
) -> tuple[date | None, date | None]:
    """(default, latest) expiry dates the form offers for a purpose, from its policy."""
    bounds = policies.expiry_bounds(
        policy=blueprint.policy_for(purpose), now=expiry_datetime(today)
    )
    return (
        bounds.default.date() if bounds.default else None,
        bounds.latest.date() if bounds.latest else None,
    )


def expiry_datetime(day: date) -> datetime:
    """An expiry date as the start of that day, UTC (so "at most N days" holds for day N)."""
    return datetime.combine(day, time.min, tzinfo=UTC)


class RequestMetaForm(forms.Form):
    """The fields of a request that are not the blueprint's config."""

    name = forms.CharField(
        label="Account name",
        max_length=40,
        help_text="3 to 40 characters: lower-case letters, digits and dashes; a letter first.",
    )
    purpose = forms.ChoiceField(label="Purpose")
    expires_on = forms.DateField(
        label="Expires on",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The account is torn down on this day.",
    )
    reason = forms.CharField(
        label="Why do you need it?",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For the approver: a prospect's name, a ticket, a release. At most 2000 "
        "characters.",
    )

    def __init__(self, *args: Any, blueprint: Blueprint, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blueprint = blueprint
        purposes = policies.allowed_purposes(blueprint)
        labels = dict(PURPOSE_LABELS)
        purpose_field = self.fields["purpose"]
        assert isinstance(purpose_field, forms.ChoiceField)
        purpose_field.choices = [(p, labels.get(p, p)) for p in purposes]
        today = timezone.localdate()
        purpose = (self.data.get("purpose") if self.is_bound else None) or (
            self.initial.get("purpose") or purposes[0]
        )
        if purpose not in purposes and not self.is_bound:
            purpose = purposes[0]
        # The purpose the page is drawn for: its policy's dates, production's values.
        self.chosen_purpose = str(purpose)
        default, latest = expiry_bounds(blueprint=blueprint, purpose=str(purpose), today=today)
        self.policy_lines = [_policy_line(blueprint=blueprint, purpose=p) for p in purposes]
        # purpose -> [default, latest] expiry dates, for the page's small script that moves
        # the date along with the purpose (the server checks it either way).
        self.expiry_map = {
            p: [
                d.isoformat() if d else ""
                for d in expiry_bounds(blueprint=blueprint, purpose=p, today=today)
            ]
            for p in purposes
        }
        widget_attrs = self.fields["expires_on"].widget.attrs
        widget_attrs["min"] = (today + timedelta(days=1)).isoformat()
        if latest:
            widget_attrs["max"] = latest.isoformat()
        if not self.is_bound:
            self.initial["purpose"] = purpose
            if default:
                self.initial.setdefault("expires_on", default.isoformat())


def _policy_line(*, blueprint: Blueprint, purpose: str) -> str:
    policy = blueprint.policy_for(purpose)
    parts = []
    if policy.default_ttl_days:
        parts.append(f"{policy.default_ttl_days} days by default")
    if policy.max_ttl_days:
        parts.append(f"at most {policy.max_ttl_days} days")
    if policy.max_active_per_user:
        parts.append(f"{policy.max_active_per_user} per person")
    if policy.auto_approve:
        parts.append("no approval needed for " + ", ".join(policy.auto_approve))
    label = dict(PURPOSE_LABELS).get(purpose, purpose)
    return f"{label}: " + ("; ".join(parts) if parts else "no limits")


# RequestInvalid's field names -> this form's field names.
SERVICE_FIELD_NAMES = {"name": "name", "purpose": "purpose", "expires_at": "expires_on"}


def production_locks(
    reference: ProductionValues | None,
) -> tuple[dict[str, FieldLock], dict[str, Any]]:
    """(JSON path -> lock, initial values) for the fields that production's values fill in."""
    if reference is None:
        return {}, {}
    purpose = dict(PURPOSE_LABELS).get(reference.purpose, reference.purpose).lower()
    if reference.locked:
        note = f"As in production ({reference.production}): locked for {purpose} accounts."
    else:
        note = (
            f"As in production ({reference.production}). A different value is allowed for "
            f"{purpose} accounts, and shown to the approver as a warning."
        )
    lock = FieldLock(note=note, read_only=reference.locked)
    locks: dict[str, FieldLock] = {}
    initial: dict[str, Any] = {}
    for dotted, value in reference.values.items():
        if value is None:
            continue
        keys = dotted.split(".")
        path = "$"
        target = initial
        for key in keys[:-1]:
            path = child_path(path, key)
            target = target.setdefault(key, {})
        locks[child_path(path, keys[-1])] = lock
        target[keys[-1]] = copy.deepcopy(value)
    return locks, initial


def with_values(config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``values`` (nested the same way) put over it."""
    merged = copy.deepcopy(config)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = with_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
