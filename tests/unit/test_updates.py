"""Pieces of edits, upgrades and following that need nothing running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accounts_app.following import following_config
from accounts_app.updates import FileChange, diff_files, is_newer
from pipelines.blueprints import Blueprint
from pipelines.models import RunKind
from pipelines.stages import approve_plan
from pipelines.stages.base import AccountInfo, StageContext, StageWaiting


def test_diff_files_gives_a_unified_diff_per_changed_added_and_removed_file() -> None:
    old = {"main.tf": b"a = 1\nb = 2\n", "gone.tf": b"x\n", "same.tf": b"s\n"}
    new = {"main.tf": b"a = 1\nb = 3\n", "new.tf": b"y\n", "same.tf": b"s\n"}
    found = {d.path: d for d in diff_files(old, new)}
    assert list(found) == ["gone.tf", "main.tf", "new.tf"]
    assert found["main.tf"].change == FileChange.CHANGED
    assert found["main.tf"].diff == (
        "--- a/main.tf\n+++ b/main.tf\n@@ -1,2 +1,2 @@\n a = 1\n-b = 2\n+b = 3\n"
    )
    assert found["gone.tf"].change == FileChange.REMOVED
    assert found["gone.tf"].diff.startswith("--- a/gone.tf\n+++ /dev/null\n")
    assert found["new.tf"].change == FileChange.ADDED
    assert found["new.tf"].diff.startswith("--- /dev/null\n+++ b/new.tf\n")
    assert diff_files(old, old) == []


@pytest.mark.parametrize(
    ("candidate", "than", "newer"),
    [
        ("1.10.0", "1.9.0", True),
        ("1.1.0", "1.1.0", False),
        ("1.0.0", "1.1.0", False),
        ("2", "1.9", True),
        ("v1.2", "1.1", True),
        ("1.0.0", None, False),  # nothing built yet: nothing to upgrade from
    ],
)
def test_blueprint_versions_compare_as_numbers(
    candidate: str, than: str | None, newer: bool
) -> None:
    assert is_newer(candidate, than=than) is newer


def test_a_follower_takes_production_values_only_at_the_equal_paths() -> None:
    config = {"label": "mine", "net": {"cidr": "10.1.0.0/16", "zone": "old"}, "size": "s"}
    production = {"label": "prod", "net": {"cidr": "10.0.0.0/16", "zone": "prod.internal"}}
    followed = following_config(
        config=config, production_config=production, paths=("net.zone", "size")
    )
    assert followed == {"label": "mine", "net": {"cidr": "10.1.0.0/16", "zone": "prod.internal"}}
    assert config["net"]["zone"] == "old"  # the account's own config is left alone


def _context(*, approval_reason: str, mode: str = "on_destroy") -> StageContext:
    blueprint = Blueprint(
        name="b", title="B", description="", version="1", parameters={}, stages=(),
        path=Path("/nonexistent"), approval_plan=mode,
    )  # fmt: skip
    account = AccountInfo(
        pk=1, name="acct", purpose="qa", cloud_account_id="", config={}, outputs={}
    )
    noop: Any = None
    return StageContext(
        account=account, run_id=1, run_kind=RunKind.UPDATE, stage_id=1,
        stage_kind="approve_plan", attempt=1, blueprint=blueprint, config={},
        previous={"plan": {"plan_sha256": "0" * 64, "add": 0, "change": 1, "replace": 0,
                           "destroy": 0, "has_changes": True}},
        workdir=Path("/nonexistent"), log=lambda line: None, add_secret=lambda value: None,
        is_cancelled=lambda: False, artifacts=noop, records=noop,
        approval_reason=approval_reason,
    )  # fmt: skip


def test_the_workflow_can_ask_for_an_approver_of_a_plan_the_mode_would_let_through() -> None:
    assert approve_plan.execute(_context(approval_reason=""))["approval_required"] is False
    with pytest.raises(StageWaiting) as waiting:
        approve_plan.execute(_context(approval_reason="the qa policy auto-approves nobody"))
    assert waiting.value.outputs["reason"] == "the qa policy auto-approves nobody"
    with pytest.raises(StageWaiting) as waiting:
        approve_plan.execute(_context(approval_reason="policy", mode="always"))
    assert waiting.value.outputs["reason"].startswith("policy; the blueprint asks for approval")
    unchanged = _context(approval_reason="policy")
    unchanged.previous["plan"]["has_changes"] = False
    assert approve_plan.execute(unchanged)["approval_required"] is False  # nothing to apply
