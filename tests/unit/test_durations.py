"""Durations in settings (PORTAL_EXPIRY_REMINDERS) and the drift interval in policies."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines.blueprints import BlueprintError, load_blueprint
from portal.durations import describe, parse_durations
from tests.unit.test_blueprints import MINIMAL, write_blueprint


def test_reminder_thresholds_parse_longest_first() -> None:
    assert parse_durations("1h, 3d,1d", name="X") == (
        timedelta(days=3),
        timedelta(days=1),
        timedelta(hours=1),
    )
    assert parse_durations("", name="X") == ()  # no reminders at all
    assert parse_durations("30m,30m", name="X") == (timedelta(minutes=30),)


@pytest.mark.parametrize("text", ["3", "3 days", "0d", "-1h", "1w", "1h 2h", "3d;1d"])
def test_a_bad_duration_names_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match="PORTAL_EXPIRY_REMINDERS: .* is not a duration"):
        parse_durations(text, name="PORTAL_EXPIRY_REMINDERS")


def test_durations_read_as_words() -> None:
    assert describe(timedelta(days=3)) == "3 days"
    assert describe(timedelta(days=1)) == "1 day"
    assert describe(timedelta(hours=1)) == "1 hour"
    assert describe(timedelta(minutes=90)) == "90 minutes"


def test_the_drift_interval_is_per_purpose_and_daily_by_default(tmp_path, settings) -> None:
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path
    spec = {
        **MINIMAL,
        "policy": {"qa": {"drift_check_hours": 6}, "demo": {"default_ttl_days": 3}},
    }
    write_blueprint(tmp_path, spec)
    blueprint = load_blueprint("tiny")
    assert blueprint.policy_for("qa").drift_check_hours == 6
    assert blueprint.policy_for("demo").drift_check_hours == 24
    assert blueprint.policy_for("loadtest").drift_check_hours == 24

    bad = {**MINIMAL, "name": "bad", "policy": {"qa": {"drift_check_hours": 0}}}
    write_blueprint(tmp_path, bad, name="bad")
    with pytest.raises(BlueprintError, match="drift_check_hours must be a positive whole number"):
        load_blueprint(name="bad")
