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
    run_kind: RunKind = RunKind.REFRESH_DATA,
    workdir: Path = Path("/nonexistent"),
) -> StageContext:
    """The context of stage ``kind`` of run ``run_id`` (refresh-data unless ``run_kind`` says
    otherwise) of ``account`` (a model)."""
    account.refresh_from_db()
    return StageContext(
        account=AccountInfo.of(account, config=account.config),
        run_id=run_id,
        run_kind=run_kind,
        stage_id=0,
        stage_kind=kind,
        attempt=1,
        blueprint=load_blueprint(account.blueprint),
        config=dict(account.config),
        previous=previous,
        workdir=workdir,
        log=log,
        add_secret=add_secret,
        is_cancelled=lambda: False,
        artifacts=None,  # type: ignore[arg-type]  # these stages store no files
        records=AccountRecords(account.pk),
    )
