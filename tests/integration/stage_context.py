"""A StageContext as the engine builds it, to run a data stage in the test process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from accounts_app.records import AccountRecords
from pipelines.blueprints import load_blueprint
from pipelines.models import RunKind
from pipelines.stages.base import AccountInfo, StageContext


def stage_context(
    *,
    account: Any,
    run_id: int,
    kind: str,
    previous: dict[str, Any],
    log: Callable[[str], None],
    add_secret: Callable[[str], None] = lambda value: None,
) -> StageContext:
    """The context of stage ``kind`` of refresh-data run ``run_id`` of ``account`` (a model)."""
    account.refresh_from_db()
    return StageContext(
        account=AccountInfo(
            pk=account.pk,
            name=account.name,
            purpose=account.purpose,
            cloud_account_id=account.cloud_account_id,
            config=dict(account.config),
            outputs=dict(account.outputs),
        ),
        run_id=run_id,
        run_kind=RunKind.REFRESH_DATA,
        stage_id=0,
        stage_kind=kind,
        attempt=1,
        blueprint=load_blueprint(account.blueprint),
        config=dict(account.config),
        previous=previous,
        workdir=Path("/nonexistent"),
        log=log,
        add_secret=add_secret,
        is_cancelled=lambda: False,
        artifacts=None,  # type: ignore[arg-type]  # the data stages store no files
        records=AccountRecords(account.pk),
    )
