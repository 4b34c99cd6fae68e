"""The models and their migrations say the same: a model change without its migration
would reach production's database only as a surprise at the next deploy."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_every_model_change_has_its_migration() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits 1 when a migration is missing
        pytest.fail(f"models without their migration (exit {exc.code}):\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()
