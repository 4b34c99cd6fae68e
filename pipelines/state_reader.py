"""An account's Terraform state, read from the portal's own backend outside any run.

Used when a production the portal built is registered: its resources come from the
state the portal keeps, not from a file someone exported. Only the backend file is laid
out; ``init`` installs the providers the state names, and ``show -json`` reads it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from pipelines.clients.terraform import TerraformClient, TerraformError
from pipelines.parity import StateInvalid, resources_from_state
from pipelines.stages.base import StageError
from pipelines.stages.terraform_support import backend_for, terraform_cli_config
from portal.errors import PortalError


class StateUnreadable(PortalError):
    """The portal's backend could not be read for the account; the message says why."""


def portal_state_resources(account_name: str) -> list[dict[str, Any]]:
    """The managed resources of the account's state in the portal's backend (sensitive
    values as digests); an account with no state yet has none."""
    try:
        backend = backend_for(account_name)
    except StageError as exc:
        raise StateUnreadable(str(exc)) from exc
    root = Path(settings.PORTAL_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="state-", dir=root) as directory:
        try:
            client = TerraformClient(
                workdir=Path(directory),
                terraform_bin=settings.TERRAFORM_BIN or None,
                cli_config_file=terraform_cli_config(),
                backend=backend,
                lock_timeout=str(settings.PORTAL_TERRAFORM_LOCK_TIMEOUT),
            )
            client.init()
            state = client.show_state()
        except TerraformError as exc:
            raise StateUnreadable(
                f"the state of {account_name} in the portal's backend cannot be read: "
                f"{exc.explanation}",
                retryable=exc.retryable,
            ) from exc
    try:
        return resources_from_state(state)
    except StateInvalid as exc:
        raise StateUnreadable(f"the state of {account_name}: {exc}") from exc
