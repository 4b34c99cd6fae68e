"""Stage `render`: the blueprint's Terraform for this account, stored with the run."""

from __future__ import annotations

import hashlib
from typing import Any

from pipelines.blueprints import Blueprint
from pipelines.models import RunKind
from pipelines.rendering import RenderError, render_blueprint
from pipelines.stages.base import StageContext, StageError, log_with_outcome

TERRAFORM_PREFIX = "terraform/"


def template_context(
    blueprint: Blueprint,
    config: dict[str, Any],
    *,
    account_name: str,
    purpose: str,
    cloud_account_id: str = "",
) -> dict[str, Any]:
    """What templates see: config, account (name, purpose, id) and blueprint (name, version)."""
    return {
        "config": config,
        "account": {"name": account_name, "purpose": purpose, "id": cloud_account_id},
        "blueprint": {"name": blueprint.name, "version": blueprint.version},
    }


def execute(ctx: StageContext) -> dict[str, Any]:
    # Milliseconds of work: its lines go out with the outcome.
    log_with_outcome(ctx)
    if ctx.run_kind == RunKind.DRIFT_CHECK:
        applied = ctx.artifacts.read(TERRAFORM_PREFIX)
        if applied:
            return _applied(ctx, files=applied)
    out_dir = ctx.workdir / "terraform"
    try:
        context = template_context(
            ctx.blueprint,
            ctx.config,
            account_name=ctx.account.name,
            purpose=ctx.account.purpose,
            cloud_account_id=ctx.account.cloud_account_id,
        )
        result = render_blueprint(ctx.blueprint.terraform_dir, context, out_dir)
    except RenderError as exc:
        raise StageError(f"render failed: {exc}", retryable=False) from exc
    # Stored so that a worker on another machine lays out exactly these files.
    digests = ctx.artifacts.replace(
        prefix=TERRAFORM_PREFIX,
        files={TERRAFORM_PREFIX + path: data for path, data in result.files.items()},
    )
    manifest = _manifest(ctx, digests=digests)
    ctx.log(f"rendered {len(manifest)} files from {ctx.blueprint.name} {ctx.blueprint.version}")
    return {
        "manifest": manifest,
        "files": len(manifest),
        "blueprint_version": ctx.blueprint.version,
    }


def _applied(ctx: StageContext, *, files: dict[str, bytes]) -> dict[str, Any]:
    """A drift check's Terraform: the files last applied, stored with its run when it
    was created; not rendered again, so a newer blueprint is not drift."""
    manifest = _manifest(
        ctx, digests={name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    )
    ctx.log(
        f"the Terraform last applied ({ctx.blueprint.name} {ctx.blueprint_version}): "
        f"{len(manifest)} files, not rendered again"
    )
    return {
        "manifest": manifest,
        "files": len(manifest),
        "blueprint_version": ctx.blueprint_version,
        "applied": True,
    }


def _manifest(ctx: StageContext, *, digests: dict[str, str]) -> list[dict[str, str]]:
    """Each stored file's path and sha256, logged as ``sha256sum`` prints them."""
    manifest = []
    for name, digest in sorted(digests.items()):
        path = name[len(TERRAFORM_PREFIX) :]
        manifest.append({"path": path, "sha256": digest})
        ctx.log(f"{digest}  {path}")
    return manifest
